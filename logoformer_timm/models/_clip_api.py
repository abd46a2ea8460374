"""The part of timm's model API that every clip model of the zoo shares: classifier, grad checkpointing, block
intermediates and pruning. A model using :class:`ClipModelApi` has ``blocks`` (an ``nn.Sequential``),
``feature_info``, ``head``, ``head_hidden_size``, ``num_classes``, ``global_pool`` (one of ``global_pools``) and
``grad_checkpointing``.
"""
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import Format, get_device_dtype
from timm.models._features import FeatureGetterNet, feature_take_indices

from ..layers import check_int

__all__ = ['ClipModelApi', 'OUTPUT_FMTS', 'grid_as', 'label_feature_maps', 'resolve_output_fmt']

OUTPUT_FMTS = ('NCTHW', 'NLC')  # (B, C, T', H', W') maps or (B, T'*H'*W', C) tokens
# the other names forward_intermediates accepts, as strings or timm's Format enum: channels-first is NCTHW here
_OUTPUT_FMT_ALIASES = {'NCHW': 'NCTHW'}


def resolve_output_fmt(output_fmt: Union[str, Format]) -> str:
    """One of ``OUTPUT_FMTS``; a string and timm's ``Format`` enum of the same name are the same format, and
    timm's channels-first image format (``'NCHW'``, what its feature wrappers pass) means ``'NCTHW'``."""
    if isinstance(output_fmt, Format):
        output_fmt = output_fmt.value
    output_fmt = _OUTPUT_FMT_ALIASES.get(output_fmt, output_fmt)
    if output_fmt not in OUTPUT_FMTS:
        raise ValueError(
            f"output_fmt must be 'NCTHW' ((B, C, T', H', W') maps) or 'NLC' ((B, T'*H'*W', C) tokens), "
            f"got {output_fmt!r}.")
    return output_fmt


def grid_as(grid: torch.Tensor, output_fmt: str) -> torch.Tensor:
    """A ``(B, T', H', W', C)`` token grid in a resolved ``output_fmt``: 'NCTHW' maps or 'NLC' tokens (views)."""
    # 'b t h w c -> b c t h w' or 'b t h w c -> b (t h w) c'
    return grid.permute(0, 4, 1, 2, 3) if output_fmt == 'NCTHW' else grid.flatten(1, 3)


def label_feature_maps(wrapper: nn.Module, block_output_fmt: str) -> None:
    """Name the format of a ``features_only`` wrapper's maps on it and in its ``feature_info`` (timm's wrappers only
    know 2-D image formats): the getter returns forward_intermediates' 'NCTHW' maps; the others (fx, hooks) return
    the blocks' own outputs, in the model class's ``block_output_fmt``."""
    fmt = 'NCTHW' if isinstance(wrapper, FeatureGetterNet) else block_output_fmt
    wrapper.output_fmt = fmt
    for info in wrapper.feature_info.info:
        info['output_fmt'] = fmt


class ClipModelApi:
    """Mixin: ``reset_classifier`` / ``get_classifier`` / ``set_grad_checkpointing`` / ``prune_intermediate_layers``
    and the block loop of ``forward_intermediates``."""

    # the final norms that ``prune_intermediate_layers(prune_norm=True)`` replaces by Identity
    final_norm_names: Tuple[str, ...] = ('norm',)
    # the ``global_pool`` values ``reset_classifier`` accepts
    global_pools: Tuple[str, ...] = ('avg', '')
    # the layout of the blocks' own outputs (what fx / hook feature wrappers return): (B, N, C) token sequences here,
    # LOGO-Former's (B, T', H', W', C) grids are 'NTHWC'
    block_output_fmt: str = 'NLC'

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (0 removes it) on the model's device/dtype; optionally change the pooling."""
        if global_pool is not None:
            if global_pool not in self.global_pools:
                raise ValueError(f'global_pool must be one of {self.global_pools}, got {global_pool!r}.')
            self.global_pool = global_pool
        self.num_classes = check_int('num_classes', num_classes, 0)
        dd = get_device_dtype(self)
        self.head = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    def run_blocks(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]],
            stop_early: bool,
            take: Callable[[torch.Tensor], torch.Tensor],
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Run the blocks (checkpointed if enabled); ``take(output)`` of every block in ``indices`` (timm's rule:
        last n if int, all if None). Returns the last output computed and the taken ones."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in take_indices:
                intermediates.append(take(x).contiguous())
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks (and optionally the final norms / head) not needed for the given intermediates."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        self.feature_info = self.feature_info[:max_index + 1]
        if prune_norm:
            for name in self.final_norm_names:
                setattr(self, name, nn.Identity())
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices
