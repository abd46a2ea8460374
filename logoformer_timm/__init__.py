"""LOGO-Former for timm: ``import logoformer_timm`` registers the ``logoformer_*`` models with timm."""
import os

# OpenMP threads that wait at the end of a parallel region sleep instead of spinning for about 3 ms (GNU OpenMP's
# default). On a machine shared with other jobs a spinning thread burns the time slice its partner needs: beside 4
# busy processes not one epoch of the training demo finished in 240 s (benchmarks/results/under_load.md). OpenMP
# reads this when torch loads, so it acts only where torch is not imported yet (the commands); a value the user set
# wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from .models import DFER_LABELS, LogoFormer, PretrainedWeightsUnavailableError, checkpoint_filter_fn  # noqa: E402
from .data import resolve_video_data_config  # noqa: E402

__version__ = '0.1.0'
