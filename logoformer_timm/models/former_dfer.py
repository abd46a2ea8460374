""" Former-DFER: Dynamic Facial Expression Recognition Transformer

Paper: `Former-DFER: Dynamic Facial Expression Recognition Transformer`
    - Zengqun Zhao, Qingshan Liu, ACM MM 2021, https://doi.org/10.1145/3474085.3475292
Official code and weights (MIT): https://github.com/zengqunzhao/Former-DFER

Written for this project from the paper and the official model's structure (not a copy of its code):

* per frame, a ResNet-18 ``conv1 .. layer3`` (the project's ``FrameStem``) gives a 256-channel map (7x7 at 112);
* the spatial Transformer: a learned position embedding on those tokens, then one pre-norm Transformer layer
  (256 wide, 8 heads of 32, MLP 512, tanh-approximated GELU);
* ResNet-18 ``layer4`` on the map, then an average pool: one 512-d token per frame;
* the temporal Transformer: a class token and a learned position embedding, three pre-norm layers (512 wide,
  8 heads of 64, MLP 1024), the class token's output into a linear classifier (no final norm).

Input is a clip ``(B, C, T, H, W)`` (or ``(B, T, C, H, W)`` with ``input_layout='BTCHW'``, the official code's
layout), RGB in [0, 1] (pixels / 255, no mean/std). The official weights load from the file the authors
distributed through ``pretrained_cfg_overlay=dict(file=...)`` (see :func:`checkpoint_filter_fn`).
"""
import math
import re
from functools import partial
from typing import Any, Dict, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models import adapt_input_conv, register_model
from timm.models._input import update_model_input_size
from timm.models._manipulate import named_apply
from timm.models.resnet import BasicBlock, downsample_conv
from timm.models.vision_transformer import Block

from ..layers import (
    INPUT_LAYOUTS, MAX_NUM_FRAMES, STEM_CHANS, STEM_STRIDE, FrameStem, check_choice, check_clip, check_heads,
    check_img_size, check_int, resample_spatial_pos_embed, resample_temporal_pos_embed)
from ..weights.files import check_weights, unwrap_checkpoint
from ..weights.filtering import check_same_architecture
from ..weights.pretrained import build_clip_model, clip_default_cfgs
from ._clip_api import FrameTokenApi, label_feature_maps
from .logoformer import _cfg as _dfer_cfg, _init_linear
from .released import ReportedResult, released_cfg

__all__ = ['FormerDFER', 'CITATION', 'checkpoint_filter_fn', 'official_layer_key', 'resample_with_class_token']

CITATION = """@inproceedings{zhao2021former,
  title={Former-DFER: Dynamic Facial Expression Recognition Transformer},
  author={Zhao, Zengqun and Liu, Qingshan},
  booktitle={Proceedings of the 29th ACM International Conference on Multimedia},
  pages={1553--1561},
  year={2021}
}"""

FRAME_DIM = 512  # ResNet-18 layer4 channels: the width of the temporal Transformer


class FormerDFER(FrameTokenApi, nn.Module):
    """Former-DFER for clips ``(B, C, T, H, W)``; see the module docstring and ``docs/architecture.md``."""

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 112,
            num_frames: int = 16,
            in_chans: int = 3,
            num_classes: int = 7,
            global_pool: str = 'token',
            spatial_depth: int = 1,
            spatial_num_heads: int = 8,
            spatial_mlp_ratio: float = 2.,
            depth: int = 3,
            num_heads: int = 8,
            mlp_ratio: float = 2.,
            qkv_bias: bool = False,
            drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            input_layout: str = 'BCTHW',
            dynamic_img_size: bool = False,
            device=None,
            dtype=None,
    ):
        """
        Args:
            img_size: Input resolution the spatial position embedding is built for (int or (H, W)), a multiple
                of 16 (official: 112, a 7x7 token map).
            num_frames: Frames per clip the temporal position embedding is built for (official: 16).
            in_chans: Input channels.
            num_classes: Classifier outputs (0 for no classifier).
            global_pool: 'token' (the class token, official), 'avg' (mean of the frame tokens) or '' (all tokens).
            spatial_depth: Transformer layers on each frame's 256-channel token map (official: 1).
            spatial_num_heads: Heads of the spatial layers (official: 8, of width 32).
            spatial_mlp_ratio: MLP width of the spatial layers as a multiple of 256 (official: 2).
            depth: Temporal Transformer layers (official: 3).
            num_heads: Heads of the temporal layers (official: 8, of width 64).
            mlp_ratio: MLP width of the temporal layers as a multiple of 512 (official: 2).
            qkv_bias: Bias on the q/k/v projections (official: none).
            drop_rate: Dropout before the classifier and after the temporal position embedding.
            attn_drop_rate: Dropout on attention weights.
            proj_drop_rate: Dropout after attention and MLP projections (the official ``dropout``, 0).
            drop_path_rate: Stochastic depth over the temporal layers, linearly increasing.
            input_layout: 'BCTHW' or 'BTCHW' (the official code's layout); never guessed from shapes.
            dynamic_img_size: Resample the position embeddings on the fly for other frame counts / resolutions.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        img_size = check_img_size(img_size)
        num_frames = check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
        for name, value in (('in_chans', in_chans), ('spatial_depth', spatial_depth), ('depth', depth),
                            ('spatial_num_heads', spatial_num_heads), ('num_heads', num_heads)):
            check_int(name, value, 1)
        check_int('num_classes', num_classes, 0)
        check_choice('input_layout', input_layout, INPUT_LAYOUTS)
        check_choice('global_pool', global_pool, self.global_pools)
        check_heads((('spatial_num_heads', STEM_CHANS, spatial_num_heads), ('num_heads', FRAME_DIM, num_heads)))

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.img_size = img_size
        self.num_frames = num_frames
        self.input_layout = input_layout
        self.dynamic_img_size = dynamic_img_size
        self.num_features = self.head_hidden_size = self.embed_dim = FRAME_DIM
        self.num_prefix_tokens = 1
        self.spatial_grid = (img_size[0] // STEM_STRIDE, img_size[1] // STEM_STRIDE)
        # the temporal Transformer's token grid: one token per frame (intermediates are (B, C, T, 1, 1) maps)
        self.grid_size = (num_frames, 1, 1)
        self.grad_checkpointing = False
        # the official GELU module is the tanh approximation, written out; nn.GELU computes the same formula
        transformer_layer = partial(
            Block, qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, norm_layer=nn.LayerNorm,
            act_layer=partial(nn.GELU, approximate='tanh'), **dd)

        self.stem = FrameStem(in_chans, **dd)
        self.pos_embed_spatial = nn.Parameter(torch.empty(1, *self.spatial_grid, STEM_CHANS, **dd))
        self.spatial_blocks = nn.Sequential(*[
            transformer_layer(STEM_CHANS, spatial_num_heads, mlp_ratio=spatial_mlp_ratio)
            for _ in range(spatial_depth)])
        # timm's ResNet-18 layer4 (BasicBlocks, 1x1 stride-2 shortcut): the keys of torchvision's, as trained
        self.layer4 = nn.Sequential(
            BasicBlock(STEM_CHANS, FRAME_DIM, stride=2, downsample=downsample_conv(
                STEM_CHANS, FRAME_DIM, 1, stride=2, norm_layer=nn.BatchNorm2d, **dd), **dd),
            BasicBlock(FRAME_DIM, FRAME_DIM, **dd))
        self.cls_token = nn.Parameter(torch.empty(1, 1, FRAME_DIM, **dd))
        self.pos_embed_temporal = nn.Parameter(torch.empty(1, 1 + num_frames, FRAME_DIM, **dd))  # class token first
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device='cpu')]
        self.blocks = nn.Sequential(*[
            transformer_layer(FRAME_DIM, num_heads, mlp_ratio=mlp_ratio, drop_path=dpr[i]) for i in range(depth)])
        # each temporal token pools a whole frame: its map is 1x1, so the spatial reduction is the frame height
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=FRAME_DIM, reduction=img_size[0], temporal_reduction=1)
            for i in range(depth)]
        self.norm = nn.Identity()  # the official class token goes to the classifier un-normalised
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(FRAME_DIM, num_classes, **dd) if num_classes > 0 else nn.Identity()

        self.init_weights()

    def init_weights(self) -> None:
        """Initialise every parameter and buffer (as timm's models do, e.g. after ``device='meta'`` and
        ``to_empty()``): timm's ResNet init for the stem and layer4 (BatchNorm statistics reset), default LayerNorms,
        ViT-style init for the Transformers and embeddings."""
        self.stem.init_weights()
        for module in self.modules():
            if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                module.reset_parameters()  # BatchNorm: its running statistics too
        for param in (self.pos_embed_spatial, self.pos_embed_temporal, self.cls_token):
            trunc_normal_(param, std=.02)
        for name in ('spatial_blocks', 'blocks'):
            named_apply(_init_linear, getattr(self, name))
        _init_linear(self.head)
        for module in self.layer4.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
        for block in self.layer4:
            block.zero_init_last()

    @staticmethod
    def sizes_of_weights(weights: Dict[str, Any]) -> Dict[str, Any]:
        """The constructor sizes a state dict of this model (our keys) fixes: frames (the temporal embedding, class
        token first), resolution (the spatial embedding) and input channels (the stem)."""
        sizes = {}
        if 'pos_embed_temporal' in weights:
            sizes['num_frames'] = weights['pos_embed_temporal'].shape[1] - 1
        if 'pos_embed_spatial' in weights:
            sizes['img_size'] = [s * STEM_STRIDE for s in weights['pos_embed_spatial'].shape[1:3]]
        if 'stem.conv1.weight' in weights:
            sizes['in_chans'] = weights['stem.conv1.weight'].shape[1]
        return sizes

    def architecture_args(self) -> Dict[str, Any]:
        """Constructor arguments the weights do not fix but their meaning depends on (recorded in exports)."""
        return dict(spatial_num_heads=self.spatial_blocks[0].attn.num_heads, num_heads=self.blocks[0].attn.num_heads,
                    global_pool=self.global_pool, input_layout=self.input_layout)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {'pos_embed_spatial', 'pos_embed_temporal', 'cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        # the per-frame network (CNN, spatial Transformer, layer4) is the temporal Transformer's stem
        return dict(
            stem=r'^stem|^pos_embed|^spatial_blocks|^layer4|^cls_token',
            blocks=r'^blocks\.(\d+)' if coarse else [(r'^blocks\.(\d+)', None)],
        )

    def set_input_size(
            self,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            num_frames: Optional[int] = None,
    ) -> None:
        """Rebuild for another resolution and/or frame count: resample the position embeddings in place."""
        img_size = self.img_size if img_size is None else check_img_size(img_size)
        num_frames = self.num_frames if num_frames is None else check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
        spatial_grid = (img_size[0] // STEM_STRIDE, img_size[1] // STEM_STRIDE)
        with torch.no_grad():
            spatial = resample_spatial_pos_embed(self.pos_embed_spatial, spatial_grid)
            temporal = resample_with_class_token(self.pos_embed_temporal, num_frames)
        self.pos_embed_spatial = nn.Parameter(spatial, requires_grad=self.pos_embed_spatial.requires_grad)
        self.pos_embed_temporal = nn.Parameter(temporal, requires_grad=self.pos_embed_temporal.requires_grad)
        self.img_size, self.num_frames, self.spatial_grid = img_size, num_frames, spatial_grid
        self.grid_size = (num_frames, 1, 1)
        for info in self.feature_info:
            info['reduction'] = img_size[0]
        update_model_input_size(self, img_size, num_frames=num_frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of clips. The clip's type, shape and dtype are checked, its values are not (for speed):
        NaN / Inf pixels give NaN logits (the commands refuse such clips: ``layers.check_finite_pixels``)."""
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError (TypeError for a dtype) naming the problem and the fix when ``x`` is not a valid clip."""
        check_clip(
            x, self.in_chans, self.input_layout, self.num_frames, self.img_size, self.dynamic_img_size,
            self.stem.conv1.weight.dtype, model_name='Former-DFER')

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames of clips ``(B, T, C, H, W)`` to one 512-d token per frame ``(B, T, 512)`` (the S-Former)."""
        maps = self.stem.forward_clip(frames)  # (B, T, 256, h, w)
        grid = maps.shape[-2:]
        pos = self.pos_embed_spatial
        if self.dynamic_img_size:  # resampling to the built size is exact, so always resample (no size branch)
            pos = resample_spatial_pos_embed(pos, grid)
        # '(b t) c h w -> (b t) (h w) c', tokens in row-major (h, w) order as the official flatten
        x = maps.flatten(0, 1).flatten(2).transpose(1, 2)
        x = self.spatial_blocks(x + pos.flatten(1, 2))
        # '(b t) (h w) c -> (b t) c h w', contiguous: on the channels-last view every convolution of layer4 would
        # copy its weight to channels-last, call after call (larger than the 7x7 maps, and slower)
        x = self.layer4(x.transpose(1, 2).unflatten(2, grid).contiguous())
        return x.mean((2, 3)).unflatten(0, maps.shape[:2])  # average pool, '(b t) c -> b t c'

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip to the temporal Transformer's input: class token then frame tokens, ``(B, 1 + T, 512)``."""
        self.check_input(x)
        # 'b c t h w -> b t c h w' (a view; BTCHW clips already are)
        x = self.frame_tokens(x.transpose(1, 2) if self.input_layout == 'BCTHW' else x)
        pos = self.pos_embed_temporal
        if self.dynamic_img_size:
            pos = resample_with_class_token(pos, x.shape[1])
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.pos_drop(x + pos)

def resample_with_class_token(pos_embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """A ``(1, 1 + T, C)`` temporal embedding for ``num_frames`` frames; the class token's position is kept."""
    return torch.cat((pos_embed[:, :1], resample_temporal_pos_embed(pos_embed[:, 1:], num_frames)), dim=1)


# the layer keys of the Transformer both of this author's models use (Former-DFER's and DFER-CLIP's
# Temporal_Model.py): layer i is ModuleList([Residual(PreNorm(Attention)), Residual(PreNorm(FeedForward))]),
# which is timm's pre-norm Block
_OFFICIAL_LAYER_KEYS = [(re.compile(pattern), repl) for pattern, repl in (
    (r'\.0\.fn\.norm\.', '.norm1.'),
    (r'\.0\.fn\.fn\.to_qkv\.', '.attn.qkv.'),
    (r'\.0\.fn\.fn\.to_out\.0\.', '.attn.proj.'),
    (r'\.1\.fn\.norm\.', '.norm2.'),
    (r'\.1\.fn\.fn\.net\.0\.', '.mlp.fc1.'),
    (r'\.1\.fn\.fn\.net\.3\.', '.mlp.fc2.'),
)]
# official key (as main_DFEW.py saves it, 'module.' stripped by unwrap_checkpoint) -> ours
_OFFICIAL_KEYS = [(re.compile(pattern), repl) for pattern, repl in (
    (r'^s_former\.pos_embedding$', 'pos_embed_spatial'),
    (r'^s_former\.(conv1|bn1|layer[123])\.', r'stem.\1.'),
    (r'^s_former\.layer4\.', 'layer4.'),
    (r'^s_former\.spatial_transformer\.layers\.(\d+)\.', r'spatial_blocks.\1.'),
    (r'^t_former\.cls_token$', 'cls_token'),
    (r'^t_former\.pos_embedding$', 'pos_embed_temporal'),
    (r'^t_former\.spatial_transformer\.layers\.(\d+)\.', r'blocks.\1.'),  # the official name of the temporal stack
    (r'^fc\.', 'head.'),
)]


def official_layer_key(key: str) -> str:
    """A key inside an official ``Transformer`` layer (``...layers.i.0.fn.fn.to_qkv.weight``) as timm's ``Block``'s."""
    for pattern, repl in _OFFICIAL_LAYER_KEYS:
        key = pattern.sub(repl, key)
    return key


def _official_to_ours(key: str) -> str:
    for pattern, repl in _OFFICIAL_KEYS:
        key = pattern.sub(repl, key)
    return official_layer_key(key)


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: FormerDFER) -> Dict[str, torch.Tensor]:
    """Adapt Former-DFER weights to ``model``: the official checkpoint as distributed, or this model's own keys.

    The official file (``main_DFEW.py``) is ``{'epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder'}``
    with ``module.``-prefixed keys (DataParallel); only ``state_dict`` is used. Official keys are renamed to
    ours, the spatial embedding ``(1, h*w, 256)`` becomes ``(1, h, w, 256)``, both position embeddings are
    resampled to the model's frames / resolution and ``stem.conv1`` is adapted to ``model.in_chans``. Anything
    that does not fit raises :class:`~logoformer_timm.weights.filtering.CheckpointMismatchError`.
    """
    state_dict = unwrap_checkpoint(state_dict)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        key = _official_to_ours(key)
        if key in target and torch.is_tensor(value):
            if key == 'pos_embed_spatial' and value.ndim == 3:  # official (1, h*w, C), a square map at 112x112
                side = math.isqrt(value.shape[1])
                if side * side == value.shape[1]:
                    value = value.unflatten(1, (side, side))
            if key == 'pos_embed_spatial' and value.ndim == 4:
                value = resample_spatial_pos_embed(value, model.spatial_grid)
            elif key == 'pos_embed_temporal' and value.ndim == 3 and value.shape[1] > 1:
                value = resample_with_class_token(value, model.num_frames)
            elif key == 'stem.conv1.weight' and value.ndim == 4 and value.shape[1] != model.in_chans:
                value = adapt_input_conv(model.in_chans, value, base_chans=value.shape[1])
        out[key] = value
    check_same_architecture(
        out, target, model_name='Former-DFER',
        hint='spatial_depth, depth, spatial_mlp_ratio, mlp_ratio, qkv_bias', classifier_prefix='head.')
    check_weights(out, 'the weights', target)
    return out


def _cfg(**kwargs) -> Dict[str, Any]:
    # LOGO-Former's cfg (16 x 112 x 112, pixels / 255, no mean/std, DFEW's label order) with the authors' test
    # protocol (their loader's sampling and PIL resize)
    return _dfer_cfg(**{
        'pool_size': (16, 1, 1),
        'test_protocol': 'former_dfer',  # logoformer_timm.data.TEST_PROTOCOLS
        'paper_ids': 'doi:10.1145/3474085.3475292',
        'paper_name': 'Former-DFER: Dynamic Facial Expression Recognition Transformer',
        **kwargs,
    })


DOWNLOAD_PAGE = 'https://drive.google.com/drive/folders/1g_n3HURQyQ-oBN6tYvhwD2M32Tdm_9gu?usp=sharing'
# best test accuracy (= WAR) per fold, "The best accuracy" line of the official log/DFEW-set{fold}-log.txt;
# the logs give no per-fold UAR (the 5-fold mean 53.69 UAR / 65.70 WAR is the paper's)
_DFEW_FOLD_WAR = {1: 66.21, 2: 64.08, 3: 66.15, 4: 65.03, 5: 67.04}


def _released_cfgs() -> Dict[str, Any]:
    cfgs = {}
    for fold, war in _DFEW_FOLD_WAR.items():
        name = f'former_dfer.dfew_fold{fold}'
        cfgs[name] = released_cfg(
            name, _cfg(), DOWNLOAD_PAGE,
            f'the DFEW fold {fold} (fd{fold}) .pth checkpoint of the authors\' "Pretrain Models on DFEW" folder, '
            f'as main_DFEW.py saved it',
            ReportedResult(
                'DFEW', fold, None, war,
                f'zengqunzhao/Former-DFER log/DFEW-set{fold}-log.txt, best test-fold accuracy over training '
                f'(the 5-fold mean in the paper: UAR 53.69 / WAR 65.70)'))
    return clip_default_cfgs(cfgs)


default_cfgs = _released_cfgs()


def _create_former_dfer(variant: str, pretrained: bool = False, **kwargs) -> FormerDFER:
    build_kwargs = dict(
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=kwargs.get('depth', 3), feature_cls='getter'),  # all temporal layers
    )
    model = build_clip_model(FormerDFER, variant, pretrained, **build_kwargs, **kwargs)
    if kwargs.get('features_only'):
        label_feature_maps(model, FormerDFER.block_output_fmt)
    return model


@register_model
def former_dfer(pretrained: bool = False, **kwargs) -> FormerDFER:
    """Former-DFER as released: ResNet-18 + one spatial and three temporal Transformer layers, 16 x 112 x 112."""
    return _create_former_dfer('former_dfer', pretrained=pretrained, **kwargs)
