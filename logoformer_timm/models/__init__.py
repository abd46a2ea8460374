from ..weights.filtering import CheckpointMismatchError, checkpoint_filter_fn
from ..weights.pretrained import PretrainedWeightsError, PretrainedWeightsUnavailableError
from .logoformer import DFER_LABELS, LogoFormer, refresh_pretrained_cfgs
from .mae_dfer import MAFW_LABELS, MaeDfer

__all__ = [
    'DFER_LABELS', 'CheckpointMismatchError', 'LogoFormer', 'MAFW_LABELS', 'MaeDfer', 'PretrainedWeightsError',
    'PretrainedWeightsUnavailableError', 'checkpoint_filter_fn', 'refresh_pretrained_cfgs']
