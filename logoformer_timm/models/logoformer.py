""" LOGO-Former: Local-Global Spatio-Temporal Transformer for dynamic facial expression recognition

Paper: `LOGO-Former: Local-Global Spatio-Temporal Transformer for Dynamic Facial Expression Recognition`
    - Fuyan Ma, Bin Sun, Shutao Li, ICASSP 2023, https://arxiv.org/abs/2305.03343

No official code exists. Every design choice below follows this project's reading of the paper
(`docs/architecture.md`, with the evidence for each choice) and is a constructor argument:

* a per-frame ResNet-18 stem (``conv1 .. layer3``, stride 16) turns each frame into a 256-channel map;
* a 1x1 token projection and factorised spatial + temporal position embeddings;
* ``depth`` blocks of pre-norm residual sub-layers, by default local window attention, then global attention
  (each token queries one summary per window), then an MLP;
* a final LayerNorm, mean over all tokens and a linear classifier.

Input is a clip ``(B, C, T, H, W)`` (or ``(B, T, C, H, W)`` with ``input_layout='BTCHW'``), RGB in [0, 1].
"""
import logging
import numbers
import os
import pickle
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError
from timm.layers import DropPath, Format, Mlp, get_device_dtype, register_notrace_function, trunc_normal_
from timm.models import (
    PretrainedCfg, adapt_input_conv, build_model_with_cfg, clean_state_dict, generate_default_cfgs, register_model)
from timm.models._builder import resolve_pretrained_cfg
from timm.models._features import feature_take_indices
from timm.models._input import update_model_input_size
from timm.models._manipulate import checkpoint_seq, named_apply
from timm.models.resnet import BasicBlock, ResNet

from ..layers import GlobalAttention3d, WindowAttention3d, resample_spatial_pos_embed, resample_temporal_pos_embed
from ..layers import eager_inference, inference_chunk_frames, map_frame_chunks, sizes_are_symbolic, to_3tuple
from ..weights import manifest
from ..weights.files import check_weights, read_state_dict, unwrap_checkpoint

__all__ = [
    'LogoFormer', 'LogoBlock', 'FrameStem', 'checkpoint_filter_fn', 'refresh_pretrained_cfgs',
    'check_clip', 'DFER_LABELS', 'OUTPUT_FMTS', 'MAX_NUM_FRAMES', 'MAX_IMG_SIZE', 'CheckpointMismatchError',
    'PretrainedWeightsError', 'PretrainedWeightsUnavailableError']

_logger = logging.getLogger(__name__)

DFER_LABELS = ('Happy', 'Sad', 'Neutral', 'Angry', 'Surprise', 'Disgust', 'Fear')
BLOCK_TYPES = ('local', 'global', 'joint')
INPUT_LAYOUTS = ('BCTHW', 'BTCHW')
OUTPUT_FMTS = ('NCTHW', 'NLC')  # (B, C, T', H', W') maps or (B, T'*H'*W', C) tokens
STEM_STRIDE = 16
STEM_CHANS = 256
MAX_NUM_FRAMES = 1024  # bounds checked before any parameter is allocated (a config.json could ask for more)
MAX_IMG_SIZE = 4096
PIXEL_RANGE_WARN_ABOVE = 10.  # a [0, 1] clip never gets here; a 0-255 one nearly always does
_STEM_PREFIXES = ('conv1.', 'bn1.', 'layer1.', 'layer2.', 'layer3.')


class FrameStem(nn.Module):
    """timm's ResNet-18 ``conv1 .. layer3`` applied to each frame: ``(N, C, H, W) -> (N, 256, H/16, W/16)``.

    :meth:`forward_clip` runs it on the frames of clips ``(B, T, C, H, W)``. At eager inference (eval mode, no
    autograd, not compiling or tracing: :func:`~logoformer_timm.layers.eager_inference`) it runs a clip's frames
    in chunks of at most ``chunk_pixels`` input pixels per chunk (at least one frame), so that the full-resolution
    ``conv1`` / ``bn1`` maps exist for one chunk at a time: at 32x224x224 they would otherwise be 2 x 103 MB, more than the whole transformer needs. Every frame is computed on its own (batch
    norm uses its running statistics), so the output is that of the unchunked stem. ``chunk_pixels = None``
    turns chunking off. Training, autograd, torch.compile and traced graphs (FX, torch.export) run all frames at
    once.
    """

    chunk_pixels: Optional[int] = 4 * 224 * 224  # 4 frames at 224x224, 16 at 112x112 (one chunk per such clip)

    def __init__(self, in_chans: int = 3, device=None, dtype=None):
        super().__init__()
        resnet = ResNet(BasicBlock, (2, 2, 2, 2), in_chans=in_chans, num_classes=0, device=device, dtype=dtype)
        # keep timm's module names so that ResNet-18 state dicts load as they are
        self.conv1, self.bn1, self.act1, self.maxpool = resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_clip(self, x: torch.Tensor) -> torch.Tensor:
        """Frames of clips ``(B, T, C, H, W)`` (any strides) to maps ``(B, T, 256, H/16, W/16)``."""
        if self.training or self.chunk_pixels is None or not eager_inference():
            # 'b t c h w -> (b t) c h w' and back
            return self(x.flatten(0, 1)).unflatten(0, (x.shape[0], x.shape[1]))
        frames = max(1, self.chunk_pixels // (x.shape[-2] * x.shape[-1]))
        # each chunk is a view of one clip's frames: no copy of the whole clip in (b t) order
        chunks = [self(clip[start:start + frames]) for clip in x.unbind(0) for start in range(0, x.shape[1], frames)]
        return torch.cat(chunks).unflatten(0, (x.shape[0], x.shape[1]))

    def load_resnet_weights(self, source: Union[str, os.PathLike]) -> None:
        """Initialise from ResNet-18 weights: a local checkpoint file or a timm model name (downloads)."""
        state_dict = _read_resnet_state_dict(source)
        stem_state = {k: v for k, v in state_dict.items() if k.startswith(_STEM_PREFIXES)}
        own = self.state_dict()
        problems = {
            'missing': sorted(set(own) - set(stem_state)),
            'unexpected': sorted(set(stem_state) - set(own)),
            'with another shape': sorted(k for k, v in own.items() if k in stem_state and stem_state[k].shape != v.shape),
        }
        if any(problems.values()):
            details = '; '.join(
                f'{len(keys)} {what} ({", ".join(keys[:4])}{", ..." if len(keys) > 4 else ""})'
                for what, keys in problems.items() if keys)
            raise ValueError(
                f'stem_weights={str(source)!r} is not a ResNet-18 checkpoint: stem keys {details}. '
                f'Pass a timm ResNet-18 such as "resnet18.a1_in1k" or a file saved from one.')
        self.load_state_dict(stem_state)


def _read_resnet_state_dict(source: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """ResNet-18 weights from a checkpoint file (the project's one reader) or a timm model name (downloads)."""
    if os.path.isfile(source):
        return {k.removeprefix('stem.'): v for k, v in read_state_dict(source).items()}
    if os.sep in str(source) or str(source).endswith(('.pth', '.pt', '.bin', '.safetensors')):
        raise FileNotFoundError(f'stem_weights file not found: {source}')
    import timm  # a timm model name, e.g. 'resnet18.a1_in1k'
    return timm.create_model(str(source), pretrained=True, num_classes=0).state_dict()


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
        if not self.training and eager_inference():
            attn = self.attn
            # chunks of whole windows (summary windows for global attention); joint attention has one window
            multiple = attn.pool_size[0] if isinstance(attn, GlobalAttention3d) else attn.window_for(x.shape[1:4])[0]
            frames = inference_chunk_frames(x, multiple)
            if frames < x.shape[1]:
                return self.forward_chunks(x, frames)
        return x + self.drop_path(self.attn(self.norm(x)))

    def forward_chunks(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Eager inference in chunks of ``frames`` frames (whole windows): the same outputs, one chunk's temporaries.

        Each chunk goes through ``self.attn``, so its hooks run once per chunk.
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
        if self.training or not eager_inference():
            return x + self.drop_path(self.mlp(self.norm(x)))
        # eager inference: the MLP is per token, so chunks of frames give the same outputs with a chunk-sized hidden
        return map_frame_chunks(lambda c: c + self.mlp(self.norm(c)), x, inference_chunk_frames(x, 1))


def _check_int(name: str, value: Any, low: int, high: Optional[int] = None) -> int:
    """``value`` as an int in ``[low, high]``, else a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
            high is not None and value > high):
        bounds = f'>= {low}' if high is None else f'from {low} to {high}'
        raise ValueError(f'{name} must be an int {bounds}, got {value!r}.')
    return int(value)


def _check_img_size(img_size: Any) -> Tuple[int, int]:
    """``img_size`` (int or (H, W)) as ``(H, W)``: multiples of the stem stride up to ``MAX_IMG_SIZE``."""
    sizes = tuple(img_size) if isinstance(img_size, (tuple, list)) else (img_size, img_size)
    if len(sizes) != 2:
        raise ValueError(f'img_size must be an int or (H, W), got {img_size!r}.')
    sizes = tuple(_check_int('img_size', s, STEM_STRIDE, MAX_IMG_SIZE) for s in sizes)
    if any(s % STEM_STRIDE for s in sizes):
        raise ValueError(f'img_size {sizes} must be a multiple of the stem stride {STEM_STRIDE}.')
    return sizes


@register_notrace_function  # reason: branches on the clip's shape and dtype
def check_clip(
        x: torch.Tensor,
        in_chans: int,
        input_layout: str,
        num_frames: int,
        img_size: Tuple[int, int],
        dynamic_img_size: bool,
        param_dtype: torch.dtype,
) -> None:
    """Raise a ValueError (TypeError for a dtype) naming the problem and the fix when ``x`` is not a valid clip."""
    layout = input_layout
    if x.ndim != 5:
        hint = ' For a single clip add the batch dim: x.unsqueeze(0).' if x.ndim == 4 else ''
        raise ValueError(
            f'LogoFormer expects a 5-D clip tensor in layout {layout} (input_layout={layout!r}), '
            f'got {x.ndim}-D shape {tuple(x.shape)}.{hint}')
    c_dim, t_dim = (1, 2) if layout == 'BCTHW' else (2, 1)
    batch, chans, frames, height, width = x.shape[0], x.shape[c_dim], x.shape[t_dim], x.shape[3], x.shape[4]
    if chans != in_chans:
        other = 'BTCHW' if layout == 'BCTHW' else 'BCTHW'
        hint = (f' The shape looks like {other}: pass input_layout={other!r} or permute the input.'
                if x.shape[t_dim] == in_chans else
                f' Build the model with in_chans={chans} to adapt the stem.')
        raise ValueError(
            f'Expected {in_chans} channels at dim {c_dim} of a {layout} clip, got shape {tuple(x.shape)}.{hint}')
    if batch == 0:
        raise ValueError(f'Empty batch: got shape {tuple(x.shape)}; pass at least one clip.')
    if frames < 1:
        raise ValueError(f'A clip needs at least one frame, got shape {tuple(x.shape)} ({layout}).')
    if height % STEM_STRIDE or width % STEM_STRIDE or height < STEM_STRIDE or width < STEM_STRIDE:
        problem = 'is smaller than' if min(height, width) < STEM_STRIDE else 'is not divisible by'
        raise ValueError(
            f'Resolution {height}x{width} {problem} the stem stride {STEM_STRIDE}; '
            f'resize the clip to a multiple of {STEM_STRIDE} (e.g. {img_size[0]}x{img_size[1]}).')
    if not dynamic_img_size and (frames, height, width) != (num_frames, *img_size):
        raise ValueError(
            f'This model was built for {num_frames} frames at {img_size[0]}x{img_size[1]}, '
            f'got {frames} frames at {height}x{width}. Build it with num_frames={frames}, '
            f'img_size=({height}, {width}), or with dynamic_img_size=True to resample the position embeddings '
            f'on the fly.')
    if not x.is_floating_point():
        raise TypeError(
            f'LogoFormer expects a float clip with RGB values in [0, 1], got dtype {x.dtype}. '
            f'Convert it with clip.float() / 255.')
    if x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f'The clip is {x.dtype} but the model is {param_dtype}. Convert the clip with clip.to({param_dtype}), '
            f'or the model with model.to({x.dtype}), or run under torch.autocast.')


class LogoFormer(nn.Module):
    """LOGO-Former for clips ``(B, C, T, H, W)``; see the module docstring and ``docs/architecture.md``."""

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 112,
            num_frames: int = 16,
            in_chans: int = 3,
            num_classes: int = 7,
            global_pool: str = 'avg',
            embed_dim: int = 512,
            depth: int = 4,
            num_heads: int = 8,
            mlp_ratio: float = 4.,
            local_window: Union[int, Sequence[int]] = (2, 4, 4),
            global_pool_size: Optional[Union[int, Sequence[int]]] = None,
            block_types: Union[str, Sequence[str]] = ('local', 'global'),
            qkv_bias: bool = False,
            drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            input_layout: str = 'BCTHW',
            dynamic_img_size: bool = False,
            stem_weights: Optional[Union[str, os.PathLike]] = None,
            device=None,
            dtype=None,
    ):
        """
        Args:
            img_size: Input resolution the position embeddings are built for (int or (H, W)), a multiple of 16
                up to MAX_IMG_SIZE.
            num_frames: Frames per clip the temporal position embedding is built for (up to MAX_NUM_FRAMES).
            in_chans: Input channels.
            num_classes: Classifier outputs (0 for no classifier).
            global_pool: 'avg' (mean over all tokens) or '' (per-token outputs).
            embed_dim: Token width C.
            depth: Number of LOGO blocks.
            num_heads: Attention heads.
            mlp_ratio: MLP hidden width as a multiple of C.
            local_window: (t, h, w) tokens per local attention window.
            global_pool_size: (t, h, w) summary kernel of the global attention (default: local_window).
            block_types: Attention sub-layers per block, in order, from 'local', 'global', 'joint'.
            qkv_bias: Bias on the q/k/v projections.
            drop_rate: Dropout before the classifier and after the position embedding.
            attn_drop_rate: Dropout on attention weights.
            proj_drop_rate: Dropout after attention and MLP projections.
            drop_path_rate: Stochastic depth, linearly increasing over blocks.
            input_layout: 'BCTHW' or 'BTCHW' (the DFER codebases' layout); never guessed from shapes.
            dynamic_img_size: Resample position embeddings on the fly for other frame counts / resolutions.
            stem_weights: ResNet-18 weights for the stem: a timm model name or a local checkpoint file.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        # every size is checked before a parameter is allocated (a config.json could ask for anything)
        img_size = _check_img_size(img_size)
        num_frames = _check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
        for name, value in (('in_chans', in_chans), ('embed_dim', embed_dim), ('depth', depth), ('num_heads', num_heads)):
            _check_int(name, value, 1)
        _check_int('num_classes', num_classes, 0)
        if isinstance(block_types, str):
            block_types = tuple(t.strip() for t in block_types.replace('+', ',').split(',') if t.strip())
        block_types = tuple(block_types)
        if not block_types or any(t not in BLOCK_TYPES for t in block_types) or len(set(block_types)) < len(block_types):
            raise ValueError(
                f'block_types must be a non-empty sequence of distinct names from {BLOCK_TYPES}, got {block_types}.')
        if input_layout not in INPUT_LAYOUTS:
            raise ValueError(f'input_layout must be one of {INPUT_LAYOUTS}, got {input_layout!r}.')
        if global_pool not in ('avg', ''):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}.")

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.img_size = img_size
        self.num_frames = num_frames
        self.input_layout = input_layout
        self.dynamic_img_size = dynamic_img_size
        self.block_types = block_types
        self.local_window = to_3tuple(local_window, 'local_window')
        self.global_pool_size = to_3tuple(
            self.local_window if global_pool_size is None else global_pool_size, 'global_pool_size')
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.grid_size = (num_frames, img_size[0] // STEM_STRIDE, img_size[1] // STEM_STRIDE)
        self.grad_checkpointing = False

        self.stem = FrameStem(in_chans, **dd)
        self.token_embed = nn.Linear(STEM_CHANS, embed_dim, **dd)  # the 1x1 projection, on channels-last maps
        self.pos_embed_spatial = nn.Parameter(torch.empty(1, *self.grid_size[1:], embed_dim, **dd))
        self.pos_embed_temporal = nn.Parameter(torch.empty(1, num_frames, embed_dim, **dd))
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device='cpu')]
        self.blocks = nn.Sequential(*[
            LogoBlock(
                embed_dim,
                num_heads,
                block_types=block_types,
                mlp_ratio=mlp_ratio,
                local_window=self.local_window,
                global_pool_size=self.global_pool_size,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[i],
                **dd,
            )
            for i in range(depth)])
        # maps are (B, C, T', H', W'): `reduction` is spatial (timm's meaning), `temporal_reduction` is over frames
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=STEM_STRIDE, temporal_reduction=1)
            for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self._pixel_range_warned = False

        self.init_weights()
        if stem_weights is not None:
            self.stem.load_resnet_weights(stem_weights)

    def init_weights(self) -> None:
        """ViT-style init for the transformer; the stem keeps timm's ResNet init."""
        trunc_normal_(self.pos_embed_spatial, std=.02)
        trunc_normal_(self.pos_embed_temporal, std=.02)
        for name in ('token_embed', 'blocks', 'head'):
            named_apply(_init_transformer_weights, getattr(self, name))

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {'pos_embed_spatial', 'pos_embed_temporal'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem|^token_embed|^pos_embed',
            blocks=r'^blocks\.(\d+)' if coarse else [(r'^blocks\.(\d+)', None), (r'^norm', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (0 removes it) on the model's device/dtype; optionally change the pooling."""
        if global_pool is not None:
            if global_pool not in ('avg', ''):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}.")
            self.global_pool = global_pool
        self.num_classes = _check_int('num_classes', num_classes, 0)
        dd = get_device_dtype(self)
        self.head = nn.Linear(self.embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    def set_input_size(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            num_frames: Optional[int] = None,
    ) -> None:
        """Rebuild for another resolution and/or frame count: resample the position embeddings in place."""
        img_size = self.img_size if img_size is None else _check_img_size(img_size)
        num_frames = self.num_frames if num_frames is None else _check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
        grid_size = (num_frames, img_size[0] // STEM_STRIDE, img_size[1] // STEM_STRIDE)
        with torch.no_grad():
            spatial = resample_spatial_pos_embed(self.pos_embed_spatial, grid_size[1:])
            temporal = resample_temporal_pos_embed(self.pos_embed_temporal, num_frames)
        self.pos_embed_spatial = nn.Parameter(spatial, requires_grad=self.pos_embed_spatial.requires_grad)
        self.pos_embed_temporal = nn.Parameter(temporal, requires_grad=self.pos_embed_temporal.requires_grad)
        self.img_size, self.num_frames, self.grid_size = img_size, num_frames, grid_size
        update_model_input_size(self, img_size, num_frames=num_frames)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError (TypeError for a dtype) naming the problem and the fix when ``x`` is not a valid clip."""
        check_clip(
            x, self.in_chans, self.input_layout, self.num_frames, self.img_size, self.dynamic_img_size,
            self.token_embed.weight.dtype)

    def _warn_on_pixel_range(self, x: torch.Tensor) -> None:
        """Warn once per model when a clip looks like 0-255 pixels; a data-dependent check, skipped while tracing."""
        if torch.compiler.is_compiling() or sizes_are_symbolic() or self._pixel_range_warned or x.device.type == 'meta':
            return
        peak = x.detach().amax().item()
        if peak > PIXEL_RANGE_WARN_ABOVE:
            self._pixel_range_warned = True
            warnings.warn(
                f'LogoFormer expects RGB values in [0, 1] but the clip reaches {peak:g}, which looks like 0-255 '
                f'pixels: divide the clip by 255 (warned once per model).', stacklevel=3)

    def _pos_embed(self, grid: Sequence[int]) -> torch.Tensor:
        """Factorised position embedding for a ``(T, H, W)`` token grid: ``(1, T, H, W, C)``."""
        spatial, temporal = self.pos_embed_spatial, self.pos_embed_temporal
        if self.dynamic_img_size:  # resampling to the built size is exact, so always resample (no size branch)
            spatial = resample_spatial_pos_embed(spatial, grid[1:])
            temporal = resample_temporal_pos_embed(temporal, grid[0])
        # '1 h w c -> 1 1 h w c' + '1 t c -> 1 t 1 1 c'
        return spatial.unsqueeze(1) + temporal.unsqueeze(2).unsqueeze(3)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip to position-embedded token grid ``(B, T, H/16, W/16, C)``."""
        self.check_input(x)
        self._warn_on_pixel_range(x)
        # 'b c t h w -> b t c h w' (a view; BTCHW clips already are)
        frames = self.stem.forward_clip(x.transpose(1, 2) if self.input_layout == 'BCTHW' else x)
        # 'b t c h w -> b t h w c'
        x = self.token_embed(frames.permute(0, 1, 3, 4, 2))
        return self.pos_drop(x + self._pos_embed(x.shape[1:4]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens ``(B, T*H'*W', C)`` in ``(t, h, w)`` row-major order."""
        x = self.embed(x)
        if self.grad_checkpointing:
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x).flatten(1, 3)  # 'b t h w c -> b (t h w) c'

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool tokens (mean for 'avg'), dropout, classify; ``pre_logits=True`` stops before the classifier."""
        if self.global_pool == 'avg':
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: Union[str, Format] = 'NCTHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Block outputs as ``(B, C, T', H', W')`` maps ('NCTHW') or ``(B, T'*H'*W', C)`` tokens ('NLC').

        Args:
            x: Input clip.
            indices: Take the last n blocks if int, all if None, the listed blocks if a sequence.
            norm: Apply the final norm to every intermediate.
            stop_early: Stop after the last requested block.
            output_fmt: 'NCTHW' (channels-first space-time maps) or 'NLC' (tokens). timm's feature wrappers pass
                their image format enum: its channels-first ``Format.NCHW`` means 'NCTHW' here.
            intermediates_only: Return only the intermediates.
        """
        output_fmt = _resolve_output_fmt(output_fmt)
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x = self.embed(x)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in take_indices:
                y = self.norm(x) if norm else x
                # 'b t h w c -> b c t h w' or 'b t h w c -> b (t h w) c'
                y = y.permute(0, 4, 1, 2, 3) if output_fmt == 'NCTHW' else y.flatten(1, 3)
                intermediates.append(y.contiguous())
        if intermediates_only:
            return intermediates
        return self.norm(x).flatten(1, 3), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks (and optionally norm/head) not needed for the given intermediates."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        self.feature_info = self.feature_info[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices


def _resolve_output_fmt(output_fmt: Union[str, Format]) -> str:
    """One of ``OUTPUT_FMTS``; timm's image ``Format`` enum (what its feature wrappers pass) maps NCHW -> NCTHW."""
    if isinstance(output_fmt, Format):
        output_fmt = {Format.NCHW: 'NCTHW', Format.NLC: 'NLC'}.get(output_fmt, output_fmt.value)
    if output_fmt not in OUTPUT_FMTS:
        raise ValueError(
            f"output_fmt must be 'NCTHW' ((B, C, T', H', W') maps) or 'NLC' ((B, T'*H'*W', C) tokens), "
            f"got {output_fmt!r}.")
    return output_fmt


def _init_transformer_weights(module: nn.Module, name: str = '') -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


_CLASSIFIER_PREFIX = 'head.'


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: LogoFormer) -> Dict[str, torch.Tensor]:
    """Adapt a LOGO-Former checkpoint to ``model``; raise :class:`CheckpointMismatchError` if it is another architecture.

    Unwraps ``state_dict_ema`` / ``model_ema`` / ``state_dict`` / ``model`` containers and ``module.`` /
    ``_orig_mod.`` prefixes, resamples the position embeddings to the model's frames and resolution, and adapts
    ``stem.conv1`` to ``model.in_chans`` from the channel count of the weight itself. The classifier is left as
    it is: timm's loader drops it when ``num_classes`` differs.

    Earlier checkpoint formats are converted here, and only here (``tests/data/state_dict_format.json`` freezes
    the current one): the global-attention summary was a depthwise Conv3d, weight ``(C, 1, kt, kh, kw)``; it is
    now ``WindowSummary``, weight ``(C, kt*kh*kw)`` with the window taken in (t, h, w) row-major order.
    """
    state_dict = unwrap_checkpoint(state_dict)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith('.summary.weight') and torch.is_tensor(value) and value.ndim == 5:
            value = value.flatten(1)  # depthwise Conv3d (C, 1, kt, kh, kw) -> (C, kt*kh*kw)
        if key in target and torch.is_tensor(value) and value.ndim == target[key].ndim:
            if key == 'pos_embed_spatial':
                value = resample_spatial_pos_embed(value, model.grid_size[1:])
            elif key == 'pos_embed_temporal':
                value = resample_temporal_pos_embed(value, model.grid_size[0])
            elif key == 'stem.conv1.weight' and value.shape[1] != model.in_chans:
                # timm's loader adapts from the cfg's declared channels; the weight's own count is the truth
                value = adapt_input_conv(model.in_chans, value, base_chans=value.shape[1])
        out[key] = value
    _check_same_architecture(out, target)
    check_weights(out, 'the weights', target)
    return out


def _shape(value: Any) -> Union[Tuple[int, ...], str]:
    return tuple(value.shape) if torch.is_tensor(value) else f'a {type(value).__name__}, not a tensor'


class CheckpointMismatchError(ValueError):
    """Weights whose keys or shapes do not fit the model (another architecture or configuration)."""


def _check_same_architecture(state_dict: Dict[str, Any], target: Dict[str, torch.Tensor]) -> None:
    def listing(keys: List[str]) -> str:
        return ', '.join(keys[:8]) + (f', ... ({len(keys)} in all)' if len(keys) > 8 else '')

    body = [k for k in target if not k.startswith(_CLASSIFIER_PREFIX)]
    missing = [k for k in body if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target and not k.startswith(_CLASSIFIER_PREFIX)]
    wrong_shape = [
        f'{k} {_shape(state_dict[k])} != {tuple(target[k].shape)}' for k in body
        if k in state_dict and _shape(state_dict[k]) != tuple(target[k].shape)]
    if missing or unexpected or wrong_shape:
        problems = [f'{name}: {listing(keys)}' for name, keys in (
            ('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', wrong_shape)) if keys]
        raise CheckpointMismatchError(
            'the weights do not fit this LOGO-Former: ' + '; '.join(problems) + '. They belong to another '
            'architecture or configuration: build the model they were trained as (variant, embed_dim, depth, '
            'block_types, qkv_bias, mlp_ratio).')


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 7,
        'input_size': (3, 112, 112),
        'fixed_input_size': True,
        'pool_size': (16, 7, 7),  # the unpooled token grid (T', H', W') of a 16 x 112 x 112 clip
        'crop_pct': 1.0,
        'crop_mode': 'squash',  # the DFER test protocol resizes the whole face crop, no centre crop
        'interpolation': 'bilinear',
        'mean': (0., 0., 0.),
        'std': (1., 1., 1.),
        'first_conv': 'stem.conv1',
        'classifier': 'head',
        'label_names': DFER_LABELS,
        'license': 'mit',
        'paper_ids': 'arXiv:2305.03343',
        'paper_name': 'LOGO-Former: Local-Global Spatio-Temporal Transformer for Dynamic Facial Expression Recognition',
        **kwargs,
    }


_ARCHS = ('logoformer_tiny', 'logoformer_small', 'logoformer_base')


def _published_cfgs() -> Dict[str, Any]:
    """One ``arch.tag`` cfg per manifest entry; architectures with no published weights keep an untagged cfg."""
    cfgs = {}
    for name, entry in manifest.PUBLISHED.items():
        if entry.arch not in _ARCHS or name != entry.name:
            raise ValueError(f'Manifest entry {name!r} must be keyed by its arch.tag, with arch in {_ARCHS}.')
        labels = dict(label_names=DFER_LABELS) if entry.num_classes == len(DFER_LABELS) else dict(label_names=None)
        cfgs[name] = _cfg(
            hf_hub_id=entry.hf_hub_id, hf_hub_filename=manifest.WEIGHTS_FILENAME, num_classes=entry.num_classes,
            license=entry.license, **labels)
    published_archs = {entry.arch for entry in manifest.PUBLISHED.values()}
    return generate_default_cfgs({
        **{arch: _cfg() for arch in _ARCHS if arch not in published_archs}, **cfgs})


default_cfgs = _published_cfgs()


def refresh_pretrained_cfgs() -> None:
    """Re-register the ``logoformer_*`` pretrained cfgs with timm after ``manifest.PUBLISHED`` changed."""
    default_cfgs.clear()
    default_cfgs.update(_published_cfgs())
    module = sys.modules[__name__]
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Overwriting logoformer_')
        for arch in _ARCHS:
            register_model(getattr(module, arch))


class PretrainedWeightsUnavailableError(RuntimeError):
    """``pretrained=True`` for a LOGO-Former name that has no published weights."""


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that could not be read or do not fit the model; the message names the source."""


def _check_weights_exist(variant: str, cfg: PretrainedCfg) -> None:
    if not cfg.has_weights and not cfg.state_dict:
        name = variant if not cfg.tag else f'{variant}.{cfg.tag}'
        raise PretrainedWeightsUnavailableError(
            f'No pretrained weights are published for {name!r} yet, so pretrained=True cannot load any '
            f'(random weights are never returned silently). To load a local checkpoint use '
            f"timm.create_model({variant!r}, pretrained=True, pretrained_cfg_overlay=dict(file='path/to/model.safetensors')) "
            f"or timm.create_model('local-dir:path/to/folder', pretrained=True); for random init use pretrained=False.")


def _describe_source(cfg: PretrainedCfg) -> str:
    if cfg.state_dict:
        return 'the state_dict given in the pretrained cfg'
    if cfg.source == 'local-dir':
        return f'local-dir:{cfg.file}'
    if cfg.file:
        return f'file {cfg.file}'
    if cfg.hf_hub_id:
        return f'hf-hub:{cfg.hf_hub_id} ({cfg.hf_hub_filename or "model.safetensors or pytorch_model.bin"})'
    return f'url {cfg.url}'


def _logoformer_for_loading(**kwargs) -> LogoFormer:
    model = LogoFormer(**kwargs)
    # timm's documented switch that turns off its own stem adaptation: checkpoint_filter_fn does it instead
    model._traits = {'first_conv': None}
    return model


def _create_logoformer(variant: str, pretrained: bool = False, **kwargs) -> LogoFormer:
    if 'dynamic_size' in kwargs:
        raise TypeError(
            'dynamic_size was renamed dynamic_img_size (timm\'s name): pass dynamic_img_size='
            f'{kwargs["dynamic_size"]!r} instead.')
    if (kwargs.get('pretrained_model_args') or {}).get('stem_weights') is not None:
        # timm passes a hf-hub:/local-dir: config.json's model_args here: a downloaded file must never name what we read
        raise ValueError(
            'config.json sets model_args.stem_weights; a model config never chooses a file or model to read. '
            'Remove stem_weights from its model_args (the weights include the stem).')
    if pretrained and kwargs.get('stem_weights') is not None:
        raise ValueError(
            'stem_weights cannot be combined with pretrained=True: pretrained weights include the stem. '
            'Drop stem_weights (or build with pretrained=False to initialise only the stem from ResNet-18).')
    build_kwargs = dict(
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=kwargs.get('depth', 4), feature_cls='getter'),  # all blocks
    )
    if not pretrained:
        source_cfg = kwargs.get('pretrained_cfg')
        source = source_cfg.get('source') if isinstance(source_cfg, dict) else None
        if source in ('local-dir', 'hf-hub'):  # create_model('local-dir:...' / 'hf-hub:...') names these weights
            location = source_cfg.get('file') if source == 'local-dir' else source_cfg.get('hf_hub_id')
            warnings.warn(
                f'{variant} was built from {source}:{location} with pretrained=False, so it has random weights, '
                f'not the ones in {location}. Pass pretrained=True to load them.', stacklevel=3)
        return build_model_with_cfg(LogoFormer, variant, pretrained, **build_kwargs, **kwargs)

    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get('pretrained_cfg'), pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    _check_weights_exist(variant, cfg)
    source = _describe_source(cfg)
    published = None if cfg.state_dict or cfg.file else manifest.find_published(cfg.hf_hub_id)
    if published is not None:
        # verified before timm sees a single tensor; timm then filters, adapts the head and loads strictly
        state_dict = manifest.load_published(published, cache_dir=kwargs.get('cache_dir'), hf_hub_id=cfg.hf_hub_id)
        kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {}, state_dict=state_dict)
    try:
        model = build_model_with_cfg(_logoformer_for_loading, variant, pretrained, **build_kwargs, **kwargs)
    except (CheckpointMismatchError, OSError, RuntimeError, SafetensorError, pickle.UnpicklingError, EOFError) as e:
        if isinstance(e, (PretrainedWeightsError, manifest.WeightsChecksumError)):
            raise
        raise PretrainedWeightsError(f'{variant} with pretrained weights from {source}: {e}') from e
    for module in (model, getattr(model, 'model', None)):  # the model, and the one inside a features wrapper
        if module is not None:
            module.pretrained_cfg.pop('state_dict', None)  # do not keep a second copy of the weights alive
            module._traits['first_conv'] = cfg.first_conv
    return model


@register_model
def logoformer_tiny(pretrained: bool = False, **kwargs) -> LogoFormer:
    """LOGO-Former tiny: C=256, 2 blocks, 4 heads."""
    model_args = dict(embed_dim=256, depth=2, num_heads=4)
    return _create_logoformer('logoformer_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def logoformer_small(pretrained: bool = False, **kwargs) -> LogoFormer:
    """LOGO-Former small: C=256, 4 blocks, 4 heads (closest to the paper's reported cost)."""
    model_args = dict(embed_dim=256, depth=4, num_heads=4)
    return _create_logoformer('logoformer_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def logoformer_base(pretrained: bool = False, **kwargs) -> LogoFormer:
    """LOGO-Former base: C=512, 4 blocks, 8 heads (the widths of the only public port)."""
    model_args = dict(embed_dim=512, depth=4, num_heads=8)
    return _create_logoformer('logoformer_base', pretrained=pretrained, **dict(model_args, **kwargs))
