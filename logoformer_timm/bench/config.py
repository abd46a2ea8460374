"""The benchmark's settings: one measurement's configuration, the accepted values and its user error."""
from dataclasses import dataclass
from typing import Optional

from ..errors import UserError

__all__ = [
    'BenchConfig', 'BenchmarkError', 'PRECISIONS', 'MODEL_DTYPES', 'AMP_DTYPES', 'SWEEP_PARAMS', 'GRID_PARAMS',
    'BENCH_MODES', 'NUM_CLASSES']

# timm benchmark.py's names: a dtype = weights and input cast to it (--model-dtype); amp_<dtype> = autocast to it
# with float32 weights (--amp --amp-dtype); amp = autocast to float16 on CUDA, bfloat16 on CPU
MODEL_DTYPES = ('float32', 'bfloat16', 'float16')
AMP_DTYPES = ('bfloat16', 'float16')
PRECISIONS = (*MODEL_DTYPES, 'amp', *(f'amp_{d}' for d in AMP_DTYPES))
SWEEP_PARAMS = ('num_frames', 'img_size')
GRID_PARAMS = ('clip', 'batch_size', 'precision', 'torchcompile')
BENCH_MODES = ('inference', 'train')
NUM_CLASSES = 7


class BenchmarkError(UserError):
    """A user error (bad flag, unknown model, missing device or extra): printed without a traceback."""


@dataclass
class BenchConfig:
    """Everything that defines one measurement except the model."""
    num_frames: int = 16
    img_size: int = 112
    protocol_clip: bool = False  # each timm model at its own protocol clip instead of num_frames x img_size
    batch_size: int = 2
    device: str = 'cpu'
    precision: str = 'float32'
    channels_last: bool = False
    torchcompile: Optional[str] = None
    num_warm_iter: int = 2
    num_bench_iter: int = 10
    threads: Optional[int] = None
    isolate: bool = True
    gemm_size: int = 2048
