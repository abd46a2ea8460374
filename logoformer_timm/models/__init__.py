from ..weights.filtering import CheckpointMismatchError, checkpoint_filter_fn
from ..weights.pretrained import PretrainedWeightsError, PretrainedWeightsUnavailableError
from .former_dfer import FormerDFER
from .logoformer import DFER_LABELS, LogoFormer, refresh_pretrained_cfgs

__all__ = [
    'DFER_LABELS', 'CheckpointMismatchError', 'FormerDFER', 'LogoFormer', 'PretrainedWeightsError',
    'PretrainedWeightsUnavailableError', 'checkpoint_filter_fn', 'refresh_pretrained_cfgs']
