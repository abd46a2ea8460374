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
import os
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import Format, trunc_normal_
from timm.models import register_model
from timm.models._input import update_model_input_size
from timm.models._manipulate import checkpoint_seq, named_apply

from ..data.protocol import DFER_LABELS
from ..layers import (
    BLOCK_TYPES, INPUT_LAYOUTS, MAX_NUM_FRAMES, PIXEL_RANGE_WARN_ABOVE, STEM_CHANS, STEM_STRIDE, FrameStem, LogoBlock,
    WindowSummary, check_choice, check_clip, check_img_size, check_int, resample_spatial_pos_embed,
    resample_temporal_pos_embed, sizes_are_symbolic, to_3tuple)
from ..weights import manifest
from ..weights.filtering import checkpoint_filter_fn
from ..weights.pretrained import build_clip_model, clip_default_cfgs, read_resnet_state_dict
from ._clip_api import OUTPUT_FMTS, ClipModelApi, grid_as, label_feature_maps, resolve_output_fmt

__all__ = ['LogoFormer', 'CITATION', 'DFER_LABELS', 'OUTPUT_FMTS', 'refresh_pretrained_cfgs']

CITATION = """@inproceedings{ma2023logoformer,
  title={LOGO-Former: Local-Global Spatio-Temporal Transformer for Dynamic Facial Expression Recognition},
  author={Ma, Fuyan and Sun, Bin and Li, Shutao},
  booktitle={IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year={2023}
}"""

class LogoFormer(ClipModelApi, nn.Module):
    """LOGO-Former for clips ``(B, C, T, H, W)``; see the module docstring and ``docs/architecture.md``."""

    block_output_fmt = 'NTHWC'  # blocks work on (B, T', H', W', C) token grids

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
        img_size = check_img_size(img_size)
        num_frames = check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
        for name, value in (('in_chans', in_chans), ('embed_dim', embed_dim), ('depth', depth), ('num_heads', num_heads)):
            check_int(name, value, 1)
        check_int('num_classes', num_classes, 0)
        if isinstance(block_types, str):
            block_types = tuple(t.strip() for t in block_types.replace('+', ',').split(',') if t.strip())
        block_types = tuple(block_types)
        if not block_types or any(t not in BLOCK_TYPES for t in block_types) or len(set(block_types)) < len(block_types):
            raise ValueError(
                f'block_types must be a non-empty sequence of distinct names from {BLOCK_TYPES}, got {block_types}.')
        check_choice('input_layout', input_layout, INPUT_LAYOUTS)
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
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=STEM_STRIDE, temporal_reduction=1,
                 output_fmt='NCTHW')
            for i in range(depth)]
        self.norm = nn.LayerNorm(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self._pixel_range_warned = False

        self._init_transformer_weights()  # the stem, norms and summaries were initialised as they were built
        if stem_weights is not None:
            self.stem.load_resnet_weights(read_resnet_state_dict(stem_weights), stem_weights)

    def init_weights(self) -> None:
        """Initialise every parameter and buffer as construction does, as timm's models do (e.g. after building on
        ``device='meta'`` and ``to_empty()``): timm's ResNet init for the stem (BatchNorm statistics reset),
        PyTorch's default init for ``token_embed``, ``head``, every LayerNorm and WindowSummary, then the ViT-style
        init of the position embeddings and the blocks' linear layers."""
        self.stem.init_weights()
        for module in self.modules():
            if isinstance(module, (nn.LayerNorm, WindowSummary)):
                module.reset_parameters()
        for module in (self.token_embed, self.head):
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        self._init_transformer_weights()

    def _init_transformer_weights(self) -> None:
        """ViT-style init: truncated-normal position embeddings and block linear weights, zero biases. Construction
        runs only this (the rest is initialised as it is built), so a seed draws the same weights as before."""
        trunc_normal_(self.pos_embed_spatial, std=.02)
        trunc_normal_(self.pos_embed_temporal, std=.02)
        for name in ('token_embed', 'blocks', 'head'):  # the submodules of each (token_embed and head have none)
            named_apply(_init_linear, getattr(self, name))

    @staticmethod
    def sizes_of_weights(weights: Dict[str, Any]) -> Dict[str, Any]:
        """The constructor sizes a state dict of this model fixes: frames and resolution (its learned position
        embeddings) and input channels (the stem)."""
        sizes = {}
        if 'pos_embed_temporal' in weights:
            sizes['num_frames'] = weights['pos_embed_temporal'].shape[1]
        if 'pos_embed_spatial' in weights:
            sizes['img_size'] = [s * STEM_STRIDE for s in weights['pos_embed_spatial'].shape[1:3]]
        if 'stem.conv1.weight' in weights:
            sizes['in_chans'] = weights['stem.conv1.weight'].shape[1]
        return sizes

    def architecture_args(self) -> Dict[str, Any]:
        """Constructor arguments the weights do not fix but their meaning depends on (recorded in exports)."""
        return dict(local_window=self.local_window, global_pool_size=self.global_pool_size,
                    block_types=self.block_types, input_layout=self.input_layout)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {'pos_embed_spatial', 'pos_embed_temporal'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem|^token_embed|^pos_embed',
            blocks=r'^blocks\.(\d+)' if coarse else [(r'^blocks\.(\d+)', None), (r'^norm', (99999,))],
        )

    def set_input_size(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            num_frames: Optional[int] = None,
    ) -> None:
        """Rebuild for another resolution and/or frame count: resample the position embeddings in place."""
        img_size = self.img_size if img_size is None else check_img_size(img_size)
        num_frames = self.num_frames if num_frames is None else check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
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
        # 'b t c h w -> b t h w c', contiguous (a no-op for channels-last maps): matmul folds only a
        # (tokens, C) matrix into one multiply; on the permuted view it broadcasts the weight per (b, t, h) row
        x = self.token_embed(frames.permute(0, 1, 3, 4, 2).contiguous())
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
        """Logits of a batch of clips. The clip's type, shape and dtype are checked, its values are not (for speed):
        NaN / Inf pixels give NaN logits (the commands refuse such clips: ``layers.check_finite_pixels``)."""
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
            output_fmt: 'NCTHW' (channels-first space-time maps) or 'NLC' (tokens), as strings or timm's ``Format``
                enum; timm's channels-first image format ('NCHW' or ``Format.NCHW``, what its feature wrappers
                pass) means 'NCTHW' here.
            intermediates_only: Return only the intermediates.
        """
        output_fmt = resolve_output_fmt(output_fmt)

        def take(x: torch.Tensor) -> torch.Tensor:
            return grid_as(self.norm(x) if norm else x, output_fmt)

        x, intermediates = self.run_blocks(self.embed(x), indices, stop_early, take)
        if intermediates_only:
            return intermediates
        return self.norm(x).flatten(1, 3), intermediates


def _init_linear(module: nn.Module, name: str = '') -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 7,
        'num_frames': 16,
        'input_size': (3, 112, 112),  # one frame; a model built with dynamic_img_size=True takes other sizes
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
        'test_protocol': 'logoformer',  # logoformer_timm.data.TEST_PROTOCOLS
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
    return clip_default_cfgs({
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
    model = build_clip_model(LogoFormer, variant, pretrained, **build_kwargs, **kwargs)
    if kwargs.get('features_only'):
        label_feature_maps(model, LogoFormer.block_output_fmt)
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
