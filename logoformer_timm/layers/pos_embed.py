"""Factorised space-time position embeddings and their resampling to other grids."""
from typing import Tuple

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ['resample_spatial_pos_embed', 'resample_temporal_pos_embed']


def resample_spatial_pos_embed(pos_embed: torch.Tensor, new_size: Tuple[int, int]) -> torch.Tensor:
    """Bicubically resample a ``(1, H, W, C)`` spatial embedding to ``(1, h, w, C)`` (as timm does for ViTs)."""
    if tuple(pos_embed.shape[1:3]) == tuple(new_size):
        return pos_embed
    orig_dtype = pos_embed.dtype
    grid = rearrange(pos_embed.float(), '1 h w c -> 1 c h w')
    grid = F.interpolate(grid, size=tuple(new_size), mode='bicubic', antialias=True, align_corners=False)
    return rearrange(grid, '1 c h w -> 1 h w c').to(orig_dtype)


def resample_temporal_pos_embed(pos_embed: torch.Tensor, new_frames: int) -> torch.Tensor:
    """Linearly resample a ``(1, T, C)`` temporal embedding to ``(1, t, C)``."""
    if pos_embed.shape[1] == new_frames:
        return pos_embed
    orig_dtype = pos_embed.dtype
    seq = rearrange(pos_embed.float(), '1 t c -> 1 c t')
    seq = F.interpolate(seq, size=new_frames, mode='linear', align_corners=False)
    return rearrange(seq, '1 c t -> 1 t c').to(orig_dtype)
