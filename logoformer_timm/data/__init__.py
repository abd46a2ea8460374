from .config import resolve_video_data_config
from .dataset import (
    AnnotationError, ClipFolderDataset, ClipLoadError, ClipRecord, collate_clips, list_frames, read_annotation_list)
from .sampling import sample_frame_indices, segment_starts
from .transforms import ClipTransform

_LISTS = ('build_dfew_lists', 'build_ferv39k_lists', 'write_annotation_list')


def __getattr__(name: str):
    """The list builders, imported on first use: importing them here would make ``python -m
    logoformer_timm.data.lists`` run a second copy of the module (runpy's RuntimeWarning)."""
    if name in _LISTS:
        from . import lists
        return getattr(lists, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
