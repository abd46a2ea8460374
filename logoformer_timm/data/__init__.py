"""The clip data path shared by training, evaluation and video prediction: timm's ``resolve_data_config`` /
``create_transform`` for clips, frame sampling, and test-time protocols as data."""
from .config import resolve_video_data_config
from .protocol import TEST_PROTOCOLS, TestProtocol, get_test_protocol, merge_views
from .sampling import sample_frame_indices, segment_starts
from .transforms import ClipTransform

__all__ = [
    'resolve_video_data_config', 'ClipTransform', 'TEST_PROTOCOLS', 'TestProtocol', 'get_test_protocol', 'merge_views',
    'sample_frame_indices', 'segment_starts']
