from .logoformer import (
    DFER_LABELS, CheckpointMismatchError, LogoFormer, PretrainedWeightsError, PretrainedWeightsUnavailableError,
    checkpoint_filter_fn, refresh_pretrained_cfgs)
