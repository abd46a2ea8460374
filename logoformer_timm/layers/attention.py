"""Space-time attention kernels of LOGO-Former.

Both kernels work on channels-last token grids ``(B, T, H, W, C)`` so that a block knows the grid from
the tensor alone (no side arguments, which keeps blocks sequential and checkpointable).

* :class:`WindowAttention3d` - multi-head self-attention inside non-overlapping 3-D windows. The grid is
  padded up to a window multiple, padded tokens are masked out as keys and their outputs are dropped.
  A window larger than the grid is clamped to the grid (the rest would be masked padding).
  ``window_size=None`` makes the window the whole grid: full (joint) space-time attention.
* :class:`GlobalAttention3d` - every token queries one summary token per window; summaries are a learned
  per-channel weighting of each window's tokens (:class:`WindowSummary`), then LayerNorm, then the k/v projection.

Both use ``F.scaled_dot_product_attention`` unless ``fused_attn`` is off (timm's convention), in which case
an explicit ``softmax(q k^T / sqrt(d)) v`` is computed, with ``attn.softmax`` and ``attn_drop`` as the FX node
and module that ``timm.utils.AttentionExtract`` reads attention maps from.

Every re-arrangement is an einops expression, the pattern being the code. einops reads a tensor's sizes, which
torch.fx proxies do not have, so the kernels call it through not-traced functions (``register_notrace_function``):
the window helpers below and :func:`rearrange`, :func:`repeat` and :func:`einsum` (einops' own, one graph node each
under FX; torch.compile and torch.export trace through them). Size-dependent steps (clamping, padding, window
partition, the padded-key mask) are not-traced functions too. Under FX or torch.export the traced graph must serve
every size, so it pads and masks unconditionally; eagerly they happen only when the grid needs them.

Eager inference (no autograd, not compiling or tracing) may run token-local work in chunks of whole frames
(:func:`inference_chunk_frames`, :func:`map_frame_chunks`): windows never cross a chunk boundary that is a
multiple of the window's frames, so each token sees exactly the same keys and the output equals the unchunked one
(up to float rounding of matmuls of another row count), while the temporaries exist for one chunk at a time.
Only CPU tensors are chunked (:func:`chunks_on`): on a GPU, chunks of ~1024 tokens would be launches too small to
fill the device, and its memory is the allocator's, so every grid runs in one piece there.
A module whose calls would be chunked runs in one piece while a forward hook or pre-hook is registered on it or
on any module inside it (or globally, :func:`has_forward_hooks`), so hooks always see whole tensors.
"""
import contextlib
import numbers
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import einops
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function, use_fused_attn

__all__ = [
    'WindowAttention3d', 'GlobalAttention3d', 'WindowSummary', 'attend', 'clamp_window', 'window_partition',
    'window_merge', 'window_qkv', 'merge_window_heads', 'padded_key_mask', 'sizes_are_symbolic', 'to_3tuple',
    'eager_inference', 'chunks_on', 'has_forward_hooks', 'hooks_see_chunks', 'inference_chunk_frames',
    'map_frame_chunks', 'rearrange', 'repeat', 'einsum']

Size3 = Tuple[int, int, int]

# tokens (batch x frames x H x W) per chunk of eager inference; None runs every grid (and the stem) in one piece
# (set it on this module: logoformer_timm.layers.attention.INFERENCE_CHUNK_TOKENS). At 224x224
# (14x14 tokens a frame) this is 4 frames of one clip: a chunk's MLP hidden layer is 6 MB instead of 51 MB per
# 32 frames, and its matmuls (M = 784 rows) still run at the machine's matmul peak
INFERENCE_CHUNK_TOKENS: Optional[int] = 1024
# device types whose eager inference runs in chunks: on CPU chunks keep a matmul's operands in cache and the RSS
# low; on CUDA (and other accelerators) 1024-token chunks would starve the device, so grids run in one piece
CHUNK_DEVICE_TYPES: Tuple[str, ...] = ('cpu',)
_hooks_see_chunks = False  # set by hooks_see_chunks()


def to_3tuple(value: Union[int, Sequence[int]], name: str = 'size') -> Size3:
    """Turn an int or a 3-sequence of positive ints into a ``(t, h, w)`` tuple; anything else is a ValueError."""
    values = (value,) * 3 if isinstance(value, numbers.Integral) else value
    if (
            isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in values)):
        raise ValueError(f'{name} must be a positive int or three positive ints (t, h, w), got {value!r}.')
    return tuple(int(v) for v in values)


def sizes_are_symbolic() -> bool:
    """True while torch.export or torch.fx traces: the graph then serves every size and may not branch on one."""
    return torch.compiler.is_exporting() or torch.fx._symbolic_trace.is_fx_symbolic_tracing()


def has_forward_hooks(*modules: nn.Module) -> bool:
    """True when a forward hook or pre-hook is registered globally, or on one of ``modules`` or a module inside one."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for module in modules for m in module.modules())


@contextlib.contextmanager
def hooks_see_chunks() -> Iterator[None]:
    """Inside it, chunked inference also runs while hooks are registered, each hook once per chunk (what the
    benchmark's per-part timing wants: the pass as users run it). Outside it, hooked modules run in one piece."""
    global _hooks_see_chunks
    previous, _hooks_see_chunks = _hooks_see_chunks, True
    try:
        yield
    finally:
        _hooks_see_chunks = previous


def eager_inference(*modules: nn.Module) -> bool:
    """True when chunked inference may run: no autograd, not compiling or tracing, chunking is on, and no forward
    hook or pre-hook is registered on ``modules`` (those called once per chunk), inside them or globally (unless
    inside :func:`hooks_see_chunks`)."""
    return (INFERENCE_CHUNK_TOKENS is not None and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not sizes_are_symbolic()
            and (_hooks_see_chunks or not has_forward_hooks(*modules)))


def chunks_on(device: torch.device) -> bool:
    """Whether eager inference on ``device`` runs in chunks (its type is in ``CHUNK_DEVICE_TYPES``: CPU only). Ask
    only after :func:`eager_inference`: under FX tracing a tensor's device is a proxy."""
    return device.type in CHUNK_DEVICE_TYPES


def inference_chunk_frames(x: torch.Tensor, multiple: int) -> int:
    """Frames per chunk of a ``(B, T, H, W, C)`` grid: a multiple of ``multiple`` with at most about
    ``INFERENCE_CHUNK_TOKENS`` tokens (at least ``multiple`` frames); ``T`` or more means one chunk, as always
    off the CPU (:func:`chunks_on`)."""
    if INFERENCE_CHUNK_TOKENS is None or not chunks_on(x.device):
        return x.shape[1]
    per_frame = x.shape[0] * x.shape[2] * x.shape[3]
    return max(1, INFERENCE_CHUNK_TOKENS // (per_frame * multiple)) * multiple


def map_frame_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, frames: int) -> torch.Tensor:
    """``fn`` applied to chunks of ``frames`` frames of a ``(B, T, ...)`` tensor, written into one output.

    ``fn`` must map frames to the same frames (``(B, t, ...) -> (B, t, ...)``); the output is allocated once, so
    only one chunk's temporaries and the output are alive (no list of chunks and no ``cat`` copy).
    """
    if frames >= x.shape[1]:
        return fn(x)
    out = None
    for start in range(0, x.shape[1], frames):
        chunk = fn(x[:, start:start + frames])
        if out is None:
            out = chunk.new_empty((chunk.shape[0], x.shape[1], *chunk.shape[2:]))
        out[:, start:start + chunk.shape[1]] = chunk
    return out


@register_notrace_function  # reason: einops reads sizes, which torch.fx proxies do not have
def rearrange(tensor: torch.Tensor, pattern: str, **axes_lengths: int) -> torch.Tensor:
    """``einops.rearrange``, one node under torch.fx symbolic tracing (traced through by compile and export)."""
    return einops.rearrange(tensor, pattern, **axes_lengths)


@register_notrace_function  # reason: einops reads sizes, which torch.fx proxies do not have
def repeat(tensor: torch.Tensor, pattern: str, **axes_lengths: int) -> torch.Tensor:
    """``einops.repeat``, one node under torch.fx symbolic tracing (traced through by compile and export)."""
    return einops.repeat(tensor, pattern, **axes_lengths)


@register_notrace_function  # reason: einops reads sizes, which torch.fx proxies do not have
def einsum(*tensors_and_pattern: Union[torch.Tensor, str]) -> torch.Tensor:
    """``einops.einsum(*tensors, pattern)``, one node under torch.fx symbolic tracing."""
    return einops.einsum(*tensors_and_pattern)


@register_notrace_function  # reason: compares sizes
def clamp_window(window: Sequence[int], grid: Sequence[int]) -> Size3:
    """The window clamped to the ``(T, H, W)`` grid, as Video Swin's ``get_window_size`` (same outputs, no padding)."""
    if torch.compiler.is_exporting():
        return tuple(window)  # an exported graph serves every size: keep the general (padded, masked) window
    return tuple(min(w, g) for w, g in zip(window, grid))


@register_notrace_function  # reason: pads depending on sizes
def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``(B, T, H, W, C)`` grid, zero-padded at the end to a window multiple, to windows ``(B, nW, wt*wh*ww, C)``."""
    t, h, w = x.shape[1:4]
    wt, wh, ww = window
    pads = ((-t) % wt, (-h) % wh, (-w) % ww)
    if sizes_are_symbolic() or any(pads):  # eagerly, no padded copy when the grid is a window multiple
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))  # F.pad lists dims backwards: C, W, H, T
    return einops.rearrange(x, 'b (nt wt) (nh wh) (nw ww) c -> b (nt nh nw) (wt wh ww) c', wt=wt, wh=wh, ww=ww)


@register_notrace_function  # reason: crops depending on sizes
def window_merge(x: torch.Tensor, window: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: windows ``(B, nW, wt*wh*ww, C)`` back to the ``(B, T, H, W, C)`` grid."""
    t, h, w = grid
    wt, wh, ww = window
    nt, nh, nw = -(-t // wt), -(-h // wh), -(-w // ww)
    x = einops.rearrange(
        x, 'b (nt nh nw) (wt wh ww) c -> b (nt wt) (nh wh) (nw ww) c', nt=nt, nh=nh, nw=nw, wt=wt, wh=wh, ww=ww)
    return x[:, :t, :h, :w]  # drop the padding


@register_notrace_function  # reason: pads depending on sizes
def window_qkv(qkv: torch.Tensor, window: Sequence[int], num_heads: int) -> torch.Tensor:
    """``(B, T, H, W, 3*heads*d)`` projections to windows ``(B*nW, wt*wh*ww, 3, heads, d)`` (zero-padded).

    One copy that moves whole token rows (a view when the window is the whole grid); q, k and v are then strided
    views of it that ``scaled_dot_product_attention`` reads as they are, as timm's ViT attention does.
    """
    t, h, w = qkv.shape[1:4]
    wt, wh, ww = window
    pads = ((-t) % wt, (-h) % wh, (-w) % ww)
    if sizes_are_symbolic() or any(pads):
        qkv = F.pad(qkv, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    return einops.rearrange(
        qkv, 'b (nt wt) (nh wh) (nw ww) (three heads d) -> (b nt nh nw) (wt wh ww) three heads d',
        wt=wt, wh=wh, ww=ww, three=3, heads=num_heads)


@register_notrace_function  # reason: crops depending on sizes
def merge_window_heads(x: torch.Tensor, window: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Attention outputs ``(B*nW, heads, wt*wh*ww, d)`` of :func:`window_qkv`'s windows back to the contiguous
    ``(B, T, H, W, heads*d)`` grid: one copy, and a second of the real tokens when the grid was padded."""
    t, h, w = grid
    wt, wh, ww = window
    nt, nh, nw = -(-t // wt), -(-h // wh), -(-w // ww)
    x = einops.rearrange(
        x, '(b nt nh nw) heads (wt wh ww) d -> b (nt wt) (nh wh) (nw ww) (heads d)',
        nt=nt, nh=nh, nw=nw, wt=wt, wh=wh, ww=ww)
    # drop the padding into a contiguous grid (a no-op without padding): matmul cannot fold a cropped view into
    # one (tokens, C) matrix, so the projection would broadcast its weight to one copy per (b, t, h) row
    return x[:, :t, :h, :w].contiguous()


@register_notrace_function  # reason: builds a tensor from sizes
def padded_key_mask(grid: Sequence[int], window: Sequence[int], device: torch.device) -> torch.Tensor:
    """``(nW, 1, 1, wt*wh*ww)`` mask, True for real tokens, of the windows of a zero-padded ``(T, H, W)`` grid."""
    wt, wh, ww = window
    real = [torch.arange(-(-size // win) * win, device=device) < size for size, win in zip(grid, window)]
    valid = real[0][:, None, None] & real[1][None, :, None] & real[2][None, None, :]  # the padded (T, H, W) grid
    return einops.rearrange(valid, '(nt wt) (nh wh) (nw ww) -> (nt nh nw) 1 1 (wt wh ww)', wt=wt, wh=wh, ww=ww)


def attend(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: Optional[torch.Tensor],
        attn_drop: nn.Dropout,
        fused: bool = True,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over ``(..., heads, N, d)`` tensors; ``key_mask`` (True = attend) broadcasts."""
    if fused:
        dropout_p = attn_drop.p if attn_drop.training else 0.
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if key_mask is not None:
        attn = attn.masked_fill(~key_mask, float('-inf'))
    attn = attn.softmax(dim=-1)
    attn = attn_drop(attn)
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
        self.head_dim = dim // num_heads
        self.window_size = None if window_size is None else to_3tuple(window_size, 'local_window')
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, window_size={self.window_size or "full grid"}'

    def window_for(self, grid: Sequence[int]) -> Sequence[int]:
        """The ``(t, h, w)`` window used on a ``(T, H, W)`` grid (the whole grid for joint attention)."""
        return grid if self.window_size is None else clamp_window(self.window_size, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention inside the windows of ``x`` (B, T, H, W, C); a chunk of whole windows of a grid gives the same
        outputs for its tokens as the grid (how chunked inference calls it)."""
        window = self.window_for(x.shape[1:4])
        grid = x.shape[1:4]
        # project real tokens only; padded positions become zero q/k/v and are masked as keys
        qkv = window_qkv(self.qkv(x), window, self.num_heads)
        # strided views of the windows, no copy
        q, k, v = rearrange(qkv, 'bn j three heads d -> three bn heads j d').unbind(0)
        key_mask = None
        if sizes_are_symbolic() or any(-g % w for g, w in zip(grid, window)):
            key_mask = padded_key_mask(grid, window, x.device)  # (n, 1, 1, j), the same for every clip
        if self.fused_attn:
            if key_mask is not None:
                key_mask = repeat(key_mask, 'n 1 1 j -> (b n) 1 1 j', b=x.shape[0])  # a small copy
            out = attend(q, k, v, key_mask, self.attn_drop, self.fused_attn)
        else:
            # the explicit path's maps (read by timm's AttentionExtract) are (B, windows*heads, j, j): per window, head
            q, k, v = (rearrange(z, '(b n) heads j d -> b (n heads) j d', b=x.shape[0]) for z in (q, k, v))
            if key_mask is not None:
                key_mask = repeat(key_mask, 'n 1 1 j -> 1 (n heads) 1 j', heads=self.num_heads)
            out = attend(q, k, v, key_mask, self.attn_drop, self.fused_attn)
            out = rearrange(out, 'b (n heads) j d -> (b n) heads j d', heads=self.num_heads)
        out = merge_window_heads(out, window, grid)  # padded outputs dropped before the projection
        return self.proj_drop(self.proj(out))


class WindowSummary(nn.Module):
    """One token per (t, h, w) window: ``summary[b, n, c] = sum_j weight[c, j] * x[b, n, j, c] + bias[c]``.

    Windows tile the grid zero-padded at the end, so this equals a depthwise Conv3d with ``kernel = stride =
    pool_size`` (the form of earlier checkpoints, converted by ``checkpoint_filter_fn``), with a 2-D weight.
    """

    def __init__(self, dim: int, pool_size: Size3, device=None, dtype=None):
        super().__init__()
        self.pool_size = pool_size
        window_tokens = pool_size[0] * pool_size[1] * pool_size[2]
        self.weight = nn.Parameter(torch.empty(dim, window_tokens, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv3d's default init (fan-in = tokens per window)."""
        bound = self.weight.shape[1] ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f'{self.weight.shape[0]}, pool_size={self.pool_size}'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W, C) -> (B, num_windows, C)``; padding contributes nothing."""
        return einsum(window_partition(x, self.pool_size), self.weight, 'b n j c, c j -> b n c') + self.bias


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
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.summary = WindowSummary(dim, self.pool_size, **dd)
        self.summary_norm = nn.LayerNorm(dim, **dd)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias, **dd)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, pool_size={self.pool_size}'

    def summarize(self, x: torch.Tensor) -> torch.Tensor:
        """One normalised summary token per window: ``(B, T, H, W, C) -> (B, num_windows, C)``."""
        return self.summary_norm(self.summary(x))

    def keys_values(self, summaries: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, heads, num_windows, d)`` of the summaries ``(B, num_windows, C)``."""
        kv = rearrange(self.kv(summaries), 'b n (two heads d) -> two b heads n d', two=2, heads=self.num_heads)
        return kv[0], kv[1]

    def forward(
            self, x: torch.Tensor, keys_values: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """Every token of ``x`` (B, T, H, W, C) queries one summary per window of ``x``, or the ``keys_values``
        (from :meth:`keys_values`) of a whole grid that ``x`` is a chunk of (how chunked inference calls it)."""
        k, v = self.keys_values(self.summarize(x)) if keys_values is None else keys_values
        q = rearrange(self.q(x), 'b t h w (heads d) -> b heads (t h w) d', heads=self.num_heads)
        out = attend(q, k, v, None, self.attn_drop, self.fused_attn)
        out = rearrange(out, 'b heads (t h w) d -> b t h w (heads d)', t=x.shape[1], h=x.shape[2], w=x.shape[3])
        return self.proj_drop(self.proj(out))
