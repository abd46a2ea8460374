from .config import resolve_video_data_config
from .dataset import (
    AnnotationError, ClipFolderDataset, ClipLoadError, ClipRecord, collate_clips, list_frames, read_annotation_list)
from .lists import build_dfew_lists, build_ferv39k_lists, write_annotation_list
from .sampling import sample_frame_indices, segment_starts
from .transforms import ClipTransform
