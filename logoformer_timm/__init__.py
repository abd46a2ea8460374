"""LOGO-Former for timm: ``import logoformer_timm`` registers the ``logoformer_*`` models with timm."""
from .models import DFER_LABELS, LogoFormer, PretrainedWeightsUnavailableError, checkpoint_filter_fn
from .data import resolve_video_data_config

__version__ = '0.1.0'
