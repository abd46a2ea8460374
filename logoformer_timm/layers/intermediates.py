"""timm's intermediate-feature API for models whose features are the outputs of one ``blocks`` stack
(``forward_intermediates`` / ``prune_intermediate_layers``), shared by the project's models.
"""
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.models._features import feature_take_indices

__all__ = ['blocks_with_intermediates', 'prune_blocks']


def blocks_with_intermediates(
        blocks: nn.Sequential,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]],
        stop_early: bool,
        grad_checkpointing: bool,
        take: Callable[[torch.Tensor], torch.Tensor],
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Run ``blocks`` on ``x``; ``take(output)`` of each block timm's ``indices`` select (all if None, the last
    n if int). ``stop_early`` stops after the last selected block. Returns the last output and the taken ones."""
    take_indices, max_index = feature_take_indices(len(blocks), indices)
    intermediates = []
    for i, block in enumerate(blocks[:max_index + 1] if stop_early else blocks):
        if grad_checkpointing:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
        if i in take_indices:
            intermediates.append(take(x).contiguous())
    return x, intermediates


def prune_blocks(
        model: nn.Module,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
) -> List[int]:
    """timm's ``prune_intermediate_layers`` for ``model.blocks`` (and ``feature_info``, ``norm``, the head)."""
    take_indices, max_index = feature_take_indices(len(model.blocks), indices)
    model.blocks = model.blocks[:max_index + 1]
    model.feature_info = model.feature_info[:max_index + 1]
    if prune_norm:
        model.norm = nn.Identity()
    if prune_head:
        model.reset_classifier(0, '')
    return take_indices
