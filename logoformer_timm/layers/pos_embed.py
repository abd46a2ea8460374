"""Factorised space-time position embeddings and their resampling to other grids.

Resampling to the embedding's own size is exact, so callers resample unconditionally instead of branching on
sizes (a branch would specialise an exported graph); both functions are not traced by FX (sizes are arguments).
Both return contiguous tensors, so that a resampled embedding made a parameter (``set_input_size``) saves with
safetensors.
"""
from typing import Tuple

import einops
import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

__all__ = ['resample_spatial_pos_embed', 'resample_temporal_pos_embed']


@register_notrace_function  # reason: the new size is an argument
def resample_spatial_pos_embed(pos_embed: torch.Tensor, new_size: Tuple[int, int]) -> torch.Tensor:
    """Bicubically resample a ``(1, H, W, C)`` spatial embedding to ``(1, h, w, C)`` (as timm does for ViTs)."""
    orig_dtype = pos_embed.dtype
    grid = einops.rearrange(pos_embed.to(torch.promote_types(orig_dtype, torch.float32)), '1 h w c -> 1 c h w')
    grid = F.interpolate(grid, size=tuple(new_size), mode='bicubic', antialias=True, align_corners=False)
    return einops.rearrange(grid, '1 c h w -> 1 h w c').to(orig_dtype).contiguous()


@register_notrace_function  # reason: the new frame count is an argument
def resample_temporal_pos_embed(pos_embed: torch.Tensor, new_frames: int) -> torch.Tensor:
    """Linearly resample a ``(1, T, C)`` temporal embedding to ``(1, t, C)``."""
    orig_dtype = pos_embed.dtype
    seq = einops.rearrange(pos_embed.to(torch.promote_types(orig_dtype, torch.float32)), '1 t c -> 1 c t')
    seq = F.interpolate(seq, size=new_frames, mode='linear', align_corners=False)
    return einops.rearrange(seq, '1 c t -> 1 t c').to(orig_dtype).contiguous()
