from .logoformer import DFER_LABELS, LogoFormer, PretrainedWeightsUnavailableError, checkpoint_filter_fn
