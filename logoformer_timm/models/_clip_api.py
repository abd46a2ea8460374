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
from timm.models._manipulate import checkpoint_seq

from ..layers import check_choice, check_int

__all__ = ['ClipModelApi', 'FrameTokenApi', 'OUTPUT_FMTS', 'grid_as', 'label_feature_maps', 'resolve_output_fmt']

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
            self.global_pool = check_choice('global_pool', global_pool, self.global_pools)
        self.num_classes = check_int('num_classes', num_classes, 0)
        self.head = self.new_head(num_classes) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    def new_head(self, num_classes: int) -> nn.Module:
        """A new, untrained classifier for ``num_classes`` classes on the model's device / dtype (a linear layer)."""
        return nn.Linear(self.head_hidden_size, num_classes, **get_device_dtype(self))

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


class FrameTokenApi(ClipModelApi):
    """Mixin for models whose ``blocks`` are a temporal Transformer over one token per frame, class token first
    (Former-DFER, DFER-CLIP): ``forward_features`` / ``forward_head`` / ``forward_intermediates`` around the model's
    ``embed(x)`` (clip to ``(B, 1 + T, C)``), ``norm``, ``head_drop`` and ``head``. ``forward`` stays in the model's
    own file: torch.fx leaves the not-traced input checks out of the graph where it finds them in the globals of the
    traced ``forward``'s module."""

    global_pools = ('token', 'avg', '')  # class token (the official models'), mean of the frame tokens, all tokens

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Temporal Transformer output ``(B, 1 + T, C)``: the class token, then one token per frame."""
        x = self.embed(x)
        if self.grad_checkpointing:
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool ('token': class token, 'avg': mean of frame tokens), dropout, classify; ``pre_logits`` stops before."""
        if self.global_pool == 'token':
            x = x[:, 0]
        elif self.global_pool == 'avg':
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: Union[str, Format] = 'NCTHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Temporal layer outputs without the class token: ``(B, C, T, 1, 1)`` maps ('NCTHW') or ``(B, T, C)``
        tokens ('NLC'); arguments as for ``LogoFormer.forward_intermediates``."""
        output_fmt = resolve_output_fmt(output_fmt)

        def take(x: torch.Tensor) -> torch.Tensor:
            y = (self.norm(x) if norm else x)[:, self.num_prefix_tokens:]
            return y.transpose(1, 2)[..., None, None] if output_fmt == 'NCTHW' else y  # 'b t c -> b c t 1 1'

        x, intermediates = self.run_blocks(self.embed(x), indices, stop_early, take)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates
