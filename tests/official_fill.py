"""The deterministic weights and inputs that the official DFER code was run on to record ``tests/data/*_official.json``.

A value depends only on its key and shape (no RNG, so no library version can change it): a quasi-random sequence
``sin(i * freq + phase)`` in float64, with ``freq`` and ``phase`` taken from the sha256 of the key, scaled per kind
of tensor so that a deep network stays in a sane range (weights ``~ U(-1, 1) * fan_in ** -0.5``, norm scales
around 1, BatchNorm running statistics away from their defaults). The recorded logits were computed by the
official repositories' own model code on exactly these tensors; the tests rebuild them and compare.
"""
import hashlib
import math
from typing import Dict, Iterable, Sequence, Tuple

import torch

__all__ = ['fill_tensor', 'fill_state_dict', 'fixed_input']


def _sequence(key: str, numel: int) -> torch.Tensor:
    """``numel`` float64 values in [-1, 1] that depend only on ``key``."""
    digest = hashlib.sha256(key.encode()).digest()
    freq = 0.5 + int.from_bytes(digest[:8], 'little') / 2 ** 64 * math.pi  # in [0.5, 0.5 + pi)
    phase = int.from_bytes(digest[8:16], 'little') / 2 ** 64 * 2 * math.pi
    i = torch.arange(numel, dtype=torch.float64)
    # the fractional part of a scaled sine is a well-spread pseudo-random value; map it to [-1, 1]
    return torch.frac(torch.sin(i * freq + phase) * 43758.5453).abs() * 2 - 1


def fill_tensor(key: str, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The value of state-dict entry ``key`` with ``shape`` under the recording rule."""
    shape = tuple(int(s) for s in shape)
    if not dtype.is_floating_point:  # BatchNorm num_batches_tracked
        return torch.full(shape, 7, dtype=dtype)
    numel = math.prod(shape)
    u = _sequence(key, numel).reshape(shape)
    name = key.rsplit('.', 1)[-1]
    if name == 'running_var':
        value = 0.5 + (u + 1) * 0.5  # [0.5, 1.5]
    elif name == 'running_mean':
        value = 0.2 * u
    elif len(shape) <= 1 and name == 'weight':  # BatchNorm / LayerNorm scales
        value = 1 + 0.2 * u
    elif len(shape) <= 1:  # biases and other vectors
        value = 0.1 * u
    else:  # matrices, convolutions, embeddings and tokens: fan-in scaled
        value = u * (math.prod(shape[1:]) ** -0.5) * math.sqrt(3)
    return value.to(dtype)


def fill_state_dict(keys_shapes: Iterable[Tuple[str, Sequence[int], str]]) -> Dict[str, torch.Tensor]:
    """A state dict from ``(key, shape, dtype name)`` triples, every value by :func:`fill_tensor`."""
    return {key: fill_tensor(key, shape, getattr(torch, dtype)) for key, shape, dtype in keys_shapes}


def fixed_input(shape: Sequence[int], low: float = 0., high: float = 1.) -> torch.Tensor:
    """A float32 clip with values in ``[low, high]`` that depends only on its shape."""
    u = _sequence(f'input{tuple(shape)}', math.prod(shape)).reshape(tuple(shape))
    return (low + (u + 1) / 2 * (high - low)).to(torch.float32)
