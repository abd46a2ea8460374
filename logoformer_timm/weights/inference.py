"""The fast path for inference, one mechanism for ``logoformer-predict``, ``logoformer-eval`` and ``load_model``.

:func:`prepare_for_inference` puts a model in eval mode, makes its forward run under ``torch.autocast`` in
bfloat16 or float16 (returning float32 outputs; weights, norms and softmax stay float32 where autocast keeps
them) and optionally compiles it with ``torch.compile`` (inductor; the first forward pass of every new input
shape compiles, which takes tens of seconds on a CPU).

Float16 on a CPU is refused unless the CPU has AMX-FP16: elsewhere PyTorch emulates it and it runs many times
slower than float32 (13x for ``logoformer_tiny`` on the project's 2-core AVX-512 test machine). Bfloat16 runs on
any CPU but is not always faster: on that machine (AVX512-BF16, no AMX, one thread, 16x112x112) it ran
``logoformer_tiny`` 1.2x and ``logoformer_small`` 1.4x faster than float32, ``logoformer_base`` 3 % slower
(``benchmarks/results/fast_path_16x112.md``); measure with ``benchmarks/flops.py --grid precision=float32,amp_bfloat16``.
"""
import os
import shutil
from typing import Any, Optional

import torch
import torch.nn as nn

__all__ = ['PRECISIONS', 'PrecisionError', 'InferenceModel', 'autocast_dtype', 'prepare_for_inference']

PRECISIONS = ('fp32', 'bf16', 'fp16')
_DTYPES = dict(fp32=None, bf16=torch.bfloat16, fp16=torch.float16)


class PrecisionError(ValueError):
    """A precision or compile request this device cannot serve (a user error)."""


def autocast_dtype(precision: str, device: Any) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device`` (None for fp32); a one-line error if unsupported."""
    if precision not in _DTYPES:
        raise PrecisionError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}.')
    device = torch.device(device)
    if precision == 'fp16' and device.type == 'cpu' and not torch.cpu._is_amx_fp16_supported():
        raise PrecisionError(
            'fp16 on this CPU would be emulated (no AMX-FP16) and run many times slower than fp32; '
            'use --precision bf16 (or fp32) on CPU, fp16 on a GPU.')
    if precision == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise PrecisionError(f'{torch.cuda.get_device_name(device)} does not support bf16; use --precision fp16.')
    return _DTYPES[precision]


class InferenceModel(nn.Module):
    """A model whose forward runs under autocast and returns float32; other attributes are the wrapped model's."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.autocast_dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype):
            return self.model(*args, **kwargs).float()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


def _check_compiler(device: torch.device) -> None:
    if device.type == 'cpu' and not any(shutil.which(c) for c in (os.environ.get('CXX', 'g++'), 'clang++')):
        raise PrecisionError('--compile on CPU needs a C++ compiler (g++ or clang++, or set CXX); none was found.')


def prepare_for_inference(model: nn.Module, precision: str = 'fp32', compile: bool = False) -> nn.Module:
    """``model`` in eval mode, running in ``precision`` ('fp32', 'bf16', 'fp16'), compiled if ``compile``.

    bf16/fp16 wrap the model in :class:`InferenceModel` (autocast, float32 outputs); ``compile`` applies
    ``torch.compile`` to the result. Attributes such as ``num_frames`` or ``pretrained_cfg`` stay reachable.
    """
    device = next(model.parameters()).device
    dtype = autocast_dtype(precision, device)
    if compile:
        _check_compiler(device)
    model = model.eval()
    if dtype is not None:
        model = InferenceModel(model, dtype).eval()
    return torch.compile(model) if compile else model
