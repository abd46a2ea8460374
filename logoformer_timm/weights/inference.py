"""The fast path for inference, one mechanism for ``logoformer-predict``, ``logoformer-eval`` and ``load_model``.

:func:`prepare_for_inference` puts a model in eval mode, runs it in bfloat16 or float16 (returning float32
outputs) and optionally compiles it with ``torch.compile`` (inductor; the first forward pass of every new input
shape compiles, which takes tens of seconds on a CPU).

``bf16`` casts the weights to bfloat16 (timm benchmark.py's ``--model-dtype bfloat16``); ``fp16`` runs under
``torch.autocast`` (weights, norms and softmax stay float32 where autocast keeps them: float16's narrow range).
For bf16 both were measured side by side (``benchmarks/results/bf16_cpu.md``: one run, one thread, batch 1,
16x112x112, a 2-core AMD EPYC Zen 5 with AVX512-BF16 and no AMX). Eager, cast weights ran 2.25x, 2.20x and 2.88x
float32 for tiny, small and base, autocast 2.34x, 2.08x and 2.80x; cast weights were the faster for four of the
five models measured (autocast converts every weight on every call: ``aten::copy_`` is 10-12 % of its pass), and
both agree with float32 alike. On the fixed clip of the tests (the face crops of ``single_face.mp4``,
``logoformer_base`` with seed-0 weights) bf16 logits differ from float32 by at most 5.9e-3 (0.55 % of the largest
logit), probabilities by 6e-4, and the top class is the same.

Float16 on a CPU is refused unless the CPU has AMX-FP16: elsewhere PyTorch emulates it and it runs many times
slower than float32 (13x for ``logoformer_tiny`` on the project's 2-core AVX-512 test machine). Measure your CPU
with ``python benchmarks/bf16_cpu.py``.
"""
import os
import shutil
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

__all__ = [
    'PRECISIONS', 'PrecisionError', 'InferenceModel', 'autocast_dtype', 'precision_of', 'prepare_for_inference']

PRECISIONS = ('fp32', 'bf16', 'fp16')
_DTYPES = dict(fp32=None, bf16=torch.bfloat16, fp16=torch.float16)


class PrecisionError(ValueError):
    """A precision or compile request this device cannot serve (a user error)."""


def autocast_dtype(precision: str, device: Any) -> Optional[torch.dtype]:
    """The lower-precision dtype for ``precision`` on ``device`` (None for fp32); a one-line error if unsupported."""
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
    """A model that returns float32 from a lower precision: its weights cast to ``dtype`` (``cast_weights``, its
    floating inputs cast to match) or its forward under autocast to ``dtype``; other attributes are the model's."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, cast_weights: bool = False):
        super().__init__()
        self.model = model.to(dtype) if cast_weights else model
        self.weight_dtype = dtype if cast_weights else None
        self.autocast_dtype = None if cast_weights else dtype

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.weight_dtype is not None:
            args = tuple(a.to(self.weight_dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
            return self.model(*args, **kwargs).float()
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

    bf16/fp16 wrap the model in :class:`InferenceModel` (float32 outputs): bf16 casts ``model``'s weights to
    bfloat16 in place, fp16 runs it under autocast (see the module docstring for why); ``compile`` applies
    ``torch.compile`` to the result. Attributes such as ``num_frames`` or ``pretrained_cfg`` stay reachable.
    """
    device = next(model.parameters()).device
    dtype = autocast_dtype(precision, device)
    if compile:
        _check_compiler(device)
    model = model.eval()
    if dtype is not None:
        model = InferenceModel(model, dtype, cast_weights=precision == 'bf16').eval()
    return torch.compile(model) if compile else model


def precision_of(model: nn.Module) -> Dict[str, Any]:
    """What a model runs in, as the commands record it: ``precision`` ('fp32', 'bf16', 'fp16') and ``weights_cast``
    (whether its weights were cast to it, as bf16 does; fp16 runs float32 weights under autocast)."""
    model = getattr(model, '_orig_mod', model)  # torch.compile's wrapper
    if isinstance(model, InferenceModel):
        dtype, cast = model.weight_dtype or model.autocast_dtype, model.weight_dtype is not None
    else:
        dtype, cast = next(model.parameters()).dtype, False
    names = {torch.float32: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16', torch.float64: 'fp64'}
    return dict(precision=names.get(dtype, str(dtype).removeprefix('torch.')), weights_cast=cast)
