"""The DFER protocol: annotation lists and clip datasets (DFEW, FERV39K, a synthetic motion set), the loss, UAR/WAR,
training and evaluation."""
from .datasets import (
    AnnotationError, ClipFolderDataset, ClipLoadError, ClipRecord, collate_clips, list_frames, read_annotation_list)
from .loss import CompactLoss, DferCriterion, create_classification_loss
from .metrics import confusion_matrix, per_class_recall, summarize, uar, war

_LISTS = ('build_dfew_lists', 'build_ferv39k_lists', 'write_annotation_list')

__all__ = [
    'AnnotationError', 'ClipFolderDataset', 'ClipLoadError', 'ClipRecord', 'collate_clips', 'list_frames',
    'read_annotation_list', 'CompactLoss', 'DferCriterion', 'create_classification_loss', 'confusion_matrix',
    'per_class_recall', 'summarize', 'uar', 'war', *_LISTS]


def __getattr__(name: str):
    """The list builders, imported on first use: importing them here would make ``python -m
    logoformer_timm.dfer.lists`` run a second copy of the module (runpy's RuntimeWarning)."""
    if name in _LISTS:
        from . import lists
        return getattr(lists, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
