"""The benchmark's settings: one measurement's configuration, the accepted values and its user error."""
from dataclasses import dataclass
from typing import Optional

from ..errors import UserError

__all__ = ['BenchConfig', 'BenchmarkError', 'PRECISIONS', 'SWEEP_PARAMS', 'GRID_PARAMS', 'BENCH_MODES', 'NUM_CLASSES']

PRECISIONS = ('float32', 'bfloat16', 'float16', 'amp', 'amp_bfloat16', 'amp_float16')
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
