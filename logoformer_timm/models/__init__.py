"""The models this package registers with timm: LOGO-Former and the DFER zoo (released checkpoints of its peers)."""
import sys
from typing import Callable, Dict, List

import timm
import torch
import torch.nn as nn

from ..weights.filtering import CheckpointMismatchError, checkpoint_filter_fn
from ..weights.pretrained import PretrainedWeightsError, PretrainedWeightsUnavailableError
from .dfer_clip import DferClip
from .former_dfer import FormerDFER
from .logoformer import DFER_LABELS, LogoFormer, refresh_pretrained_cfgs
from .mae_dfer import MAFW_LABELS, MaeDfer
from .released import REPORTED_RESULTS, ReportedResult
from .s2d import S2D

__all__ = [
    'DFER_LABELS', 'CheckpointMismatchError', 'DferClip', 'FormerDFER', 'LogoFormer', 'MAFW_LABELS', 'MODEL_MODULES',
    'MaeDfer', 'PretrainedWeightsError', 'PretrainedWeightsUnavailableError', 'REPORTED_RESULTS', 'ReportedResult', 'S2D',
    'checkpoint_filter_fn', 'checkpoint_filter_of', 'citation_of', 'list_clip_models', 'refresh_pretrained_cfgs']

# the model files of this package, as timm files them (``timm.list_models(module=...)``)
MODEL_MODULES = ('logoformer', 'former_dfer', 'mae_dfer', 'dfer_clip', 's2d')


def list_clip_models(include_tags: bool = False) -> List[str]:
    """Every clip model this package registers with timm (LOGO-Former and the DFER zoo)."""
    return timm.list_models(module=list(MODEL_MODULES), include_tags=include_tags)


def citation_of(model: nn.Module) -> str:
    """The BibTeX entry of the paper of ``model``'s model file (its ``CITATION``)."""
    return sys.modules[type(model).__module__].CITATION


def checkpoint_filter_of(model: nn.Module) -> Callable[[Dict, nn.Module], Dict[str, torch.Tensor]]:
    """The ``checkpoint_filter_fn`` of ``model``'s model file (timm's convention: one filter per model file)."""
    return sys.modules[type(model).__module__].checkpoint_filter_fn
