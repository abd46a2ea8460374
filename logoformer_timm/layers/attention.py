"""Space-time attention kernels of LOGO-Former.

Both kernels work on channels-last token grids ``(B, T, H, W, C)`` so that a block knows the grid from
the tensor alone (no side arguments, which keeps blocks sequential and checkpointable).

* :class:`WindowAttention3d` - multi-head self-attention inside non-overlapping 3-D windows. The grid is
  padded up to a window multiple, padded tokens are masked out as keys and their outputs are dropped.
  ``window_size=None`` makes the window the whole grid: full (joint) space-time attention.
* :class:`GlobalAttention3d` - every token queries one summary token per window; summaries come from a
  depthwise Conv3d with ``kernel = stride = pool_size``, then LayerNorm, then the k/v projection.

Both use ``F.scaled_dot_product_attention`` unless ``fused_attn`` is off (timm's convention), in which case
an explicit ``softmax(q k^T / sqrt(d)) v`` is computed (attention maps, exact FLOP counting).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat
from timm.layers import use_fused_attn

__all__ = ['WindowAttention3d', 'GlobalAttention3d', 'attend', 'pad_grid', 'to_3tuple']

Size3 = Tuple[int, int, int]


def to_3tuple(value: Union[int, Sequence[int]], name: str = 'size') -> Size3:
    """Turn an int or a 3-sequence of positive ints into a ``(t, h, w)`` tuple."""
    if isinstance(value, int):
        value = (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3 or any(v < 1 for v in value):
        raise ValueError(f'{name} must be a positive int or three positive ints (t, h, w), got {value}.')
    return value


def pad_grid(x: torch.Tensor, multiple: Size3) -> Tuple[torch.Tensor, Size3]:
    """Zero-pad a ``(B, T, H, W, C)`` grid at the end of T, H and W up to a multiple; return it and the pads."""
    _, t, h, w, _ = x.shape
    pads = tuple((-size) % m for size, m in zip((t, h, w), multiple))
    if any(pads):
        # F.pad lists pads from the last dim backwards: C, W, H, T
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    return x, pads


def attend(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: Optional[torch.Tensor] = None,
        dropout_p: float = 0.,
        fused: bool = True,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over ``(..., heads, N, d)`` tensors; ``key_mask`` (True = attend) broadcasts."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if key_mask is not None:
        attn = attn.masked_fill(~key_mask, float('-inf'))
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


class WindowAttention3d(nn.Module):
    """Multi-head self-attention restricted to non-overlapping (t, h, w) windows of a token grid."""

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            window_size: Optional[Union[int, Sequence[int]]] = (2, 4, 4),
            qkv_bias: bool = False,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if dim % num_heads:
            raise ValueError(f'embed_dim ({dim}) must be divisible by num_heads ({num_heads}).')
        self.num_heads = num_heads
        self.window_size = None if window_size is None else to_3tuple(window_size, 'local_window')
        self.fused_attn = use_fused_attn()
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, window_size={self.window_size or "full grid"}'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, t, h, w, _ = x.shape
        window = (t, h, w) if self.window_size is None else self.window_size
        # project real tokens only; padded positions become zero q/k/v and are masked as keys
        qkv, pads = pad_grid(self.qkv(x), window)
        q, k, v = rearrange(
            qkv, 'b (nt wt) (nh wh) (nw ww) (three heads d) -> three (b nt nh nw) heads (wt wh ww) d',
            wt=window[0], wh=window[1], ww=window[2], three=3, heads=self.num_heads,
        )
        key_mask = None
        if any(pads):
            valid = torch.zeros(t + pads[0], h + pads[1], w + pads[2], dtype=torch.bool, device=x.device)
            valid[:t, :h, :w] = True
            key_mask = repeat(
                valid, '(nt wt) (nh wh) (nw ww) -> (b nt nh nw) 1 1 (wt wh ww)',
                wt=window[0], wh=window[1], ww=window[2], b=x.shape[0],
            )
        out = attend(q, k, v, key_mask, self.attn_drop if self.training else 0., self.fused_attn)
        out = rearrange(
            out, '(b nt nh nw) heads (wt wh ww) d -> b (nt wt) (nh wh) (nw ww) (heads d)',
            nt=(t + pads[0]) // window[0], nh=(h + pads[1]) // window[1], nw=(w + pads[2]) // window[2],
            wt=window[0], wh=window[1], ww=window[2],
        )
        out = out[:, :t, :h, :w]  # drop padded outputs before the projection
        return self.proj_drop(self.proj(out))


class GlobalAttention3d(nn.Module):
    """Every token queries one summary token per (t, h, w) window of the whole clip."""

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            pool_size: Union[int, Sequence[int]] = (2, 4, 4),
            qkv_bias: bool = False,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if dim % num_heads:
            raise ValueError(f'embed_dim ({dim}) must be divisible by num_heads ({num_heads}).')
        self.num_heads = num_heads
        self.pool_size = to_3tuple(pool_size, 'global_pool_size')
        self.fused_attn = use_fused_attn()
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        # depthwise: each channel summarises its own window with a learned weighting
        self.summary = nn.Conv3d(dim, dim, self.pool_size, stride=self.pool_size, groups=dim, **dd)
        self.summary_norm = nn.LayerNorm(dim, **dd)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, pool_size={self.pool_size}'

    def summarize(self, x: torch.Tensor) -> torch.Tensor:
        """One summary token per window: ``(B, T, H, W, C) -> (B, num_windows, C)``; padding adds zeros."""
        x, _ = pad_grid(x, self.pool_size)
        s = self.summary(rearrange(x, 'b t h w c -> b c t h w'))
        return self.summary_norm(rearrange(s, 'b c t h w -> b (t h w) c'))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, t, h, w, _ = x.shape
        q = rearrange(self.q(x), 'b t h w (heads d) -> b heads (t h w) d', heads=self.num_heads)
        k, v = rearrange(
            self.kv(self.summarize(x)), 'b n (two heads d) -> two b heads n d', two=2, heads=self.num_heads)
        out = attend(q, k, v, None, self.attn_drop if self.training else 0., self.fused_attn)
        out = rearrange(out, 'b heads (t h w) d -> b t h w (heads d)', t=t, h=h, w=w)
        return self.proj_drop(self.proj(out))
