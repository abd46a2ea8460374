"""Exact FLOP counting that includes attention: ``torch.utils.flop_counter`` on the meta device.

On CPU, ``F.scaled_dot_product_attention`` dispatches to a flash kernel that FlopCounterMode has no formula
for (it counts 0), and fvcore/thop skip it entirely. On the meta device SDPA decomposes into counted
matmuls, so the totals match an analytic count. Nothing is computed and no memory is used for activations.
FlopCounterMode counts 2 FLOPs per multiply-add; ``macs = flops / 2``.
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['FlopCount', 'count_flops', 'COUNTER_NAME']

COUNTER_NAME = 'torch.utils.flop_counter.FlopCounterMode (meta device)'


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


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> FlopCount:
    """Count the forward FLOPs of ``model`` on an input of ``input_shape`` (batch included) without running it."""
    meta_model = copy.deepcopy(model).to('meta').eval()
    x = torch.empty(tuple(input_shape), device='meta')
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(x)
    root = type(meta_model).__name__
    by_module = {}
    for name, ops in counter.get_flop_counts().items():
        path = name.removeprefix(root).removeprefix('.')
        if path and path != 'Global':
            by_module[path] = int(sum(ops.values()))
    return FlopCount(flops=int(counter.get_total_flops()), by_module=by_module)
