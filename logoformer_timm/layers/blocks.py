"""LOGO-Former's residual sub-layers and blocks on ``(B, T, H, W, C)`` token grids: :class:`SpaceTimeAttention`
(one pre-norm attention sub-layer) and :class:`LogoBlock` (attention sub-layers, then an MLP).
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp

from .attention import GlobalAttention3d, WindowAttention3d, eager_inference, inference_chunk_frames, map_frame_chunks

__all__ = ['BLOCK_TYPES', 'LogoBlock', 'SpaceTimeAttention']

BLOCK_TYPES = ('local', 'global', 'joint')


class SpaceTimeAttention(nn.Module):
    """One pre-norm residual attention sub-layer: ``x + DropPath(Attn(LN(x)))``."""

    def __init__(
            self,
            kind: str,
            dim: int,
            num_heads: int,
            local_window: Tuple[int, int, int],
            global_pool_size: Tuple[int, int, int],
            qkv_bias: bool,
            attn_drop: float,
            proj_drop: float,
            drop_path: float,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm = nn.LayerNorm(dim, **dd)
        common = dict(num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        if kind == 'global':
            self.attn = GlobalAttention3d(dim, pool_size=global_pool_size, **common)
        else:  # 'joint' is window attention whose window is the whole grid
            self.attn = WindowAttention3d(dim, window_size=local_window if kind == 'local' else None, **common)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and eager_inference(self.norm, self.attn):  # no chunks while they have hooks
            attn = self.attn
            # chunks of whole windows (summary windows for global attention); joint attention has one window
            multiple = attn.pool_size[0] if isinstance(attn, GlobalAttention3d) else attn.window_for(x.shape[1:4])[0]
            frames = inference_chunk_frames(x, multiple)
            if frames < x.shape[1]:
                return self.forward_chunks(x, frames)
        return x + self.drop_path(self.attn(self.norm(x)))

    def forward_chunks(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Eager inference in chunks of ``frames`` frames (whole windows): the same outputs, one chunk's temporaries.

        Each chunk goes through ``self.norm`` and ``self.attn``; :meth:`forward` does not chunk while they have hooks.
        """
        if isinstance(self.attn, GlobalAttention3d):
            # summaries of whole windows chunk by chunk, then every chunk's tokens query all of them
            summaries = torch.cat([self.attn.summarize(self.norm(c)) for c in x.split(frames, dim=1)], dim=1)
            keys_values = self.attn.keys_values(summaries)
            return map_frame_chunks(lambda c: c + self.attn(self.norm(c), keys_values), x, frames)
        return map_frame_chunks(lambda c: c + self.attn(self.norm(c)), x, frames)


class LogoBlock(nn.Module):
    """Attention sub-layers in ``block_types`` order (default local then global), then an MLP, on (B, T, H, W, C)."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            block_types: Sequence[str] = ('local', 'global'),
            mlp_ratio: float = 4.,
            local_window: Tuple[int, int, int] = (2, 4, 4),
            global_pool_size: Tuple[int, int, int] = (2, 4, 4),
            qkv_bias: bool = False,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        # sub-layers are attributes named '<kind>_attn' ('global' is a Python keyword, which breaks FX codegen)
        self.attn_names = tuple(f'{kind}_attn' for kind in block_types)
        for kind, name in zip(block_types, self.attn_names):
            self.add_module(name, SpaceTimeAttention(
                kind, dim, num_heads, local_window, global_pool_size, qkv_bias, attn_drop, proj_drop, drop_path, **dd))
        self.norm = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.attn_names:
            x = getattr(self, name)(x)
        if self.training or not eager_inference(self.norm, self.mlp):  # no chunks while they have hooks
            return x + self.drop_path(self.mlp(self.norm(x)))
        # eager inference: the MLP is per token, so chunks of frames give the same outputs with a chunk-sized hidden
        return map_frame_chunks(lambda c: c + self.mlp(self.norm(c)), x, inference_chunk_frames(x, 1))
