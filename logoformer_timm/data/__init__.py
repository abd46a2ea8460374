"""The clip data path shared by training, evaluation and video prediction: timm's ``resolve_data_config`` /
``create_transform`` for clips, and frame sampling."""
from .config import resolve_video_data_config
from .sampling import sample_frame_indices, segment_starts
from .transforms import ClipTransform

__all__ = ['resolve_video_data_config', 'ClipTransform', 'sample_frame_indices', 'segment_starts']
