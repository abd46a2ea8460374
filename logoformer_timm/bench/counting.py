"""Exact FLOP counting that includes attention: ``torch.utils.flop_counter`` on the meta device.

On CPU, ``F.scaled_dot_product_attention`` dispatches to a flash kernel that FlopCounterMode has no formula
for (it counts 0), and fvcore/thop skip it entirely. On the meta device SDPA decomposes into counted
matmuls, so the totals match an analytic count. Nothing is computed and no memory is used for activations.
FlopCounterMode counts 2 FLOPs per multiply-add; ``macs = flops / 2``. Only matmuls, convolutions and
attention have formulas: norms, activations, softmax and pooling count 0 (as in every MAC counter).
"""
import copy
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import LogoFormer
from .models import ModelSpec, build_model

__all__ = ['FlopCount', 'count_flops', 'flops_by_part', 'COUNTER_NAME', 'LOGOFORMER_PARTS', 'ModelCount', 'count_model']

COUNTER_NAME = 'torch.utils.flop_counter.FlopCounterMode (meta device)'

# (part, module path regex) for LogoFormer; the paths are those of ``LogoFormer.named_modules()``
LOGOFORMER_PARTS: Tuple[Tuple[str, str], ...] = (
    ('stem', r'stem'),
    ('token embedding', r'token_embed'),
    ('local attention', r'blocks\.\d+\.local_attn'),
    ('global attention', r'blocks\.\d+\.global_attn'),
    ('joint attention', r'blocks\.\d+\.joint_attn'),
    ('MLP', r'blocks\.\d+\.mlp'),
    ('head', r'head'),
)


@dataclass
class FlopCount:
    """Total FLOPs of one forward pass and FLOPs per module path (module paths relative to the model)."""
    flops: int
    by_module: Dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> float:
        return self.flops / 2

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9


def count_flops(model: nn.Module, input_shape: Sequence[int], backward: bool = False) -> FlopCount:
    """Count the forward FLOPs of ``model`` on an input of ``input_shape`` (batch included) without running it.

    ``backward=True`` counts a training step's forward + backward (gradients of ``output.sum()``); the optimizer
    step is not counted.
    """
    meta_model = copy.deepcopy(model).to('meta').train(backward)
    x = torch.empty(tuple(input_shape), device='meta')
    counter = FlopCounterMode(display=False)
    with counter, torch.set_grad_enabled(backward):
        out = meta_model(x)
        if backward:
            out.sum().backward()
    root = type(meta_model).__name__
    by_module = {}
    for name, ops in counter.get_flop_counts().items():
        path = name.removeprefix(root).removeprefix('.')
        if path and path != 'Global':
            by_module[path] = int(sum(ops.values()))
    return FlopCount(flops=int(counter.get_total_flops()), by_module=by_module)


def flops_by_part(count: FlopCount, parts: Optional[Sequence[Tuple[str, str]]] = LOGOFORMER_PARTS) -> Dict[str, int]:
    """Split a count into named parts by module-path regex (``None``: the top-level children, looking through
    single-child wrappers); 'other' holds the rest.

    Parts with no FLOPs in this model are left out.
    """
    if parts is None:
        prefix = ''
        while True:  # descend through wrappers with a single child (e.g. transformers' model.*)
            level = [k for k in count.by_module if k.startswith(prefix) and '.' not in k[len(prefix):]]
            if len(level) != 1:
                break
            prefix = level[0] + '.'
        parts = tuple((k[len(prefix):], re.escape(k)) for k in level)
    out = {}
    for part, pattern in parts:
        flops = sum(v for k, v in count.by_module.items() if re.fullmatch(pattern, k))
        if flops:
            out[part] = flops
    rest = count.flops - sum(out.values())
    if rest:
        out['other'] = rest
    return out


@dataclass
class ModelCount:
    """Size and counted cost of one model at one clip size (per clip)."""
    param_count: float
    infer: Any
    train_gmacs: float
    detail: Dict[str, float]


def count_model(spec: ModelSpec, num_frames: int, img_size: int) -> ModelCount:
    """Params (M), forward count, forward+backward GMACs and the per-part GMACs of one clip, on the meta device."""
    model = build_model(spec, num_frames, img_size, device='meta')
    shape = (1, 3, num_frames, img_size, img_size)
    infer = count_flops(model, shape)
    train = count_flops(model, shape, backward=True)
    parts = LOGOFORMER_PARTS if isinstance(model, LogoFormer) else None
    detail = {k: v / 2e9 for k, v in flops_by_part(infer, parts).items()}
    return ModelCount(sum(p.numel() for p in model.parameters()) / 1e6, infer, train.gmacs, detail)
