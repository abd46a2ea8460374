""" MAE-DFER: the fine-tuned LGI-Former for dynamic facial expression recognition, loading the authors' checkpoints

Paper: `MAE-DFER: Efficient Masked Autoencoder for Self-supervised Dynamic Facial Expression Recognition`
    - Licai Sun, Zheng Lian, Bin Liu, Jianhua Tao, ACM MM 2023, https://arxiv.org/abs/2307.02227

Official code and weights (MIT): https://github.com/sunlicai/MAE-DFER. This is an independent implementation in this
project's style; it loads the released fine-tuned checkpoints as the authors distributed them (see
:func:`checkpoint_filter_fn` and ``docs/architecture.md``) and is checked against logits recorded from the
official model code (``tests/data/mae_dfer_official.json``).

* a tubelet embedding (Conv3d, 2 frames x 16 x 16 pixels) and a fixed sinusoid position table;
* the token grid cut into regions (default 2 x 5 x 10 tokens), each with one learned region token;
* ``depth`` LGI blocks: attention inside each region (with its region token), attention among the region tokens,
  then every token attends to all region tokens; then an MLP. ``attn_type='joint'`` is plain ViT attention;
* the region tokens averaged, LayerNorm, a linear classifier.

Input is a clip ``(B, C, T, H, W)`` (``(B, T, C, H, W)`` with ``input_layout='BTCHW'``) normalised with the
ImageNet mean / std, as the official test transform gives it.
"""
import math
import re
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Format, Mlp, trunc_normal_, use_fused_attn
from timm.models import register_model
from timm.models._manipulate import checkpoint_seq

from ..data.protocol import DFER_LABELS, MAFW_LABELS  # MAFW's: the label order of the official preprocess/mafw.py
from ..layers import (
    INPUT_LAYOUTS, MAX_NUM_FRAMES, attend, check_choice, check_clip, check_img_size, check_int, to_3tuple, window_merge,
    window_partition)
from ..weights.files import check_weights, unwrap_checkpoint
from ..weights.filtering import check_same_architecture
from ..weights.pretrained import build_clip_model, clip_default_cfgs
from ._clip_api import ClipModelApi, grid_as, label_feature_maps, resolve_output_fmt
from .released import ReportedResult, released_cfg

__all__ = ['MaeDfer', 'CITATION', 'MAFW_LABELS', 'checkpoint_filter_fn']

CITATION = """@inproceedings{sun2023maedfer,
  title={MAE-DFER: Efficient Masked Autoencoder for Self-supervised Dynamic Facial Expression Recognition},
  author={Sun, Licai and Lian, Zheng and Liu, Bin and Tao, Jianhua},
  booktitle={Proceedings of the 31st ACM International Conference on Multimedia},
  pages={6110--6121},
  year={2023}
}"""

ATTN_TYPES = ('local_global', 'joint')
CLASSIFY_TOKENS = ('region', 'org', 'all')  # pooled by forward_head: region tokens, grid tokens, or both
PATCH_SIZE = 16
_norm_layer = partial(nn.LayerNorm, eps=1e-6)


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed 1-D sin / cos position table ``(num_positions, dim)`` of the Transformer paper, computed in float64:
    dim ``2i`` is ``sin(p / 10000 ** (2i / dim))``, dim ``2i + 1`` the cosine of the same angle."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = (torch.arange(dim, dtype=torch.float64) // 2) * 2 / dim
    angle = position / torch.pow(10000., exponent)
    return torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos()).float()


class TubeletEmbed(nn.Module):
    """Clip ``(B, C, T, H, W)`` to a channels-last token grid ``(B, T/t, H/16, W/16, D)`` (one Conv3d)."""

    def __init__(self, in_chans: int, embed_dim: int, tubelet_size: int, device=None, dtype=None):
        super().__init__()
        kernel = (tubelet_size, PATCH_SIZE, PATCH_SIZE)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)  # 'b c t h w -> b t h w c'


class LgiAttention(nn.Module):
    """Multi-head attention of ``x`` (B, N, C) on ``context`` (B, M, C) (default: itself), VideoMAE's biases.

    q and (k, v) have their own projections so that the same module serves self- and cross-attention; with
    ``qkv_bias`` q and v have a learned bias and k none (VideoMAE's rule, which the released weights follow).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            qkv_bias: bool = True,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.fused_attn = use_fused_attn()
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=False, **dd)
        self.v_bias = nn.Parameter(torch.zeros(dim, **dd)) if qkv_bias else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        # 'b n (heads d) -> b heads n d'
        q = self.q(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        kv = self.kv(context)
        if self.v_bias is not None:
            kv = kv + torch.cat((torch.zeros_like(self.v_bias), self.v_bias))  # k gets no bias
        # 'b m (two heads d) -> two b heads m d'
        k, v = kv.unflatten(-1, (2, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
        out = attend(q, k, v, None, self.attn_drop, self.fused_attn)
        return self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))  # 'b heads n d -> b n (heads d)'


class LgiBlock(nn.Module):
    """One LGI-Former block on regions ``(B, N, 1 + S, C)`` (each region's token first, then its S grid tokens).

    1. local: attention inside every region ('self': all 1 + S tokens; 'cross': only the region token queries);
    2. global: the N region tokens of a clip attend to each other;
    3. interaction ('cross': every grid token of the clip queries all N region tokens; 'self': attention inside
       every region again); then the MLP. Pre-norm residual sub-layers.

    Stochastic depth drops per region for the sub-layers that work per region, as the official block does.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            first_attn_type: str = 'self',
            third_attn_type: str = 'cross',
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        attn = partial(LgiAttention, dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        self.first_attn_type, self.third_attn_type = first_attn_type, third_attn_type
        self.local_norm = _norm_layer(dim, **dd)
        self.local_context_norm = _norm_layer(dim, **dd) if first_attn_type == 'cross' else None
        self.local_attn = attn()
        self.global_norm = _norm_layer(dim, **dd)
        self.global_attn = attn()
        self.interact_norm = _norm_layer(dim, **dd)
        self.interact_context_norm = _norm_layer(dim, **dd) if third_attn_type == 'cross' else None
        self.interact_attn = attn()
        self.norm2 = _norm_layer(dim, **dd)
        # the official MLP drops only after fc2
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=(0., proj_drop), **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        regions = x.flatten(0, 1)  # '(b n) s c': one region per row
        if self.first_attn_type == 'self':
            regions = regions + self.drop_path(self.local_attn(self.local_norm(regions)))
            summary, tokens = regions[:, :1], regions[:, 1:]
        else:
            summary, tokens = regions[:, :1], regions[:, 1:]
            summary = summary + self.drop_path(
                self.local_attn(self.local_norm(summary), self.local_context_norm(tokens)))
        summary = summary.reshape(x.shape[0], x.shape[1], x.shape[3])  # '(b n) 1 c -> b n c'
        summary = summary + self.drop_path(self.global_attn(self.global_norm(summary)))
        if self.third_attn_type == 'cross':
            tokens = tokens.reshape(x.shape[0], -1, x.shape[3])  # '(b n) s c -> b (n s) c'
            tokens = tokens + self.drop_path(
                self.interact_attn(self.interact_norm(tokens), self.interact_context_norm(summary)))
            regions = torch.cat((summary.flatten(0, 1).unsqueeze(1), tokens.reshape(regions.shape[0], -1, x.shape[3])), 1)
        else:
            regions = torch.cat((summary.flatten(0, 1).unsqueeze(1), tokens), 1)
            regions = regions + self.drop_path(self.interact_attn(self.interact_norm(regions)))
        regions = regions + self.drop_path(self.mlp(self.norm2(regions)))
        return regions.reshape(x.shape)


class JointBlock(nn.Module):
    """Plain pre-norm ViT block on tokens ``(B, L, C)`` (``attn_type='joint'``)."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = _norm_layer(dim, **dd)
        self.attn = LgiAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, **dd)
        self.norm2 = _norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=(0., proj_drop), **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MaeDfer(ClipModelApi, nn.Module):
    """MAE-DFER's fine-tuned LGI-Former for clips ``(B, C, T, H, W)``; see the module docstring."""

    final_norm_names = ('norm', 'fc_norm')
    # LGI blocks work on regions: (B, regions, 1 + tokens per region, C), the region token first ('joint': 'NLC')
    block_output_fmt = 'NRLC'

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 160,
            num_frames: int = 16,
            in_chans: int = 3,
            num_classes: int = 7,
            global_pool: str = 'avg',
            embed_dim: int = 512,
            depth: int = 16,
            num_heads: int = 8,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            tubelet_size: int = 2,
            attn_type: str = 'local_global',
            region_size: Union[int, Sequence[int]] = (2, 5, 10),
            first_attn_type: str = 'self',
            third_attn_type: str = 'cross',
            classify_tokens: str = 'region',
            drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            init_scale: float = 0.001,
            input_layout: str = 'BCTHW',
            device=None,
            dtype=None,
    ):
        """
        Args:
            img_size: Input resolution (int or (H, W)), a multiple of 16.
            num_frames: Frames per clip, a multiple of ``tubelet_size``.
            in_chans: Input channels.
            num_classes: Classifier outputs (0 for no classifier).
            global_pool: 'avg' (mean of the ``classify_tokens``) or '' (per-token outputs).
            embed_dim: Token width C.
            depth: Number of blocks.
            num_heads: Attention heads.
            mlp_ratio: MLP hidden width as a multiple of C.
            qkv_bias: Learned q and v biases (k has none).
            tubelet_size: Frames per token.
            attn_type: 'local_global' (LGI blocks) or 'joint' (plain attention over all tokens).
            region_size: (t, h, w) tokens per region; the token grid must be a multiple of it.
            first_attn_type: LGI local step, 'self' (region tokens and grid tokens) or 'cross' (region token queries).
            third_attn_type: LGI interaction step, 'cross' (grid tokens query all region tokens) or 'self'.
            classify_tokens: Tokens averaged for the classifier: 'region', 'org' (grid tokens) or 'all'
                (``attn_type='joint'`` has only grid tokens and averages them all).
            drop_rate: Dropout after the position table, the attention projections and the MLP.
            attn_drop_rate: Dropout on attention weights.
            drop_path_rate: Stochastic depth, linearly increasing over blocks (the official fine-tuning used 0.1).
            init_scale: Scale of the classifier's initial weights.
            input_layout: 'BCTHW' or 'BTCHW' (the DFER codebases' layout); never guessed from shapes.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        img_size = check_img_size(img_size)
        num_frames = check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
        for name, value in (('in_chans', in_chans), ('embed_dim', embed_dim), ('depth', depth),
                            ('num_heads', num_heads), ('tubelet_size', tubelet_size)):
            check_int(name, value, 1)
        check_int('num_classes', num_classes, 0)
        if num_frames % tubelet_size:
            raise ValueError(f'num_frames ({num_frames}) must be a multiple of tubelet_size ({tubelet_size}).')
        if embed_dim % num_heads:
            raise ValueError(f'embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).')
        for name, value, allowed in (
                ('attn_type', attn_type, ATTN_TYPES), ('first_attn_type', first_attn_type, ('self', 'cross')),
                ('third_attn_type', third_attn_type, ('self', 'cross')),
                ('classify_tokens', classify_tokens, CLASSIFY_TOKENS), ('input_layout', input_layout, INPUT_LAYOUTS),
                ('global_pool', global_pool, ('avg', ''))):
            check_choice(name, value, allowed)
        self.grid_size = (num_frames // tubelet_size, img_size[0] // PATCH_SIZE, img_size[1] // PATCH_SIZE)
        self.region_size = to_3tuple(region_size, 'region_size')
        if attn_type == 'local_global' and any(g % r for g, r in zip(self.grid_size, self.region_size)):
            raise ValueError(
                f'The token grid {self.grid_size} (frames / {tubelet_size}, H / 16, W / 16) is not a multiple of '
                f'region_size {self.region_size}: choose a region size that divides it, or another num_frames / '
                f'img_size.')

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.img_size = img_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.input_layout = input_layout
        self.attn_type = attn_type
        self.classify_tokens = classify_tokens if attn_type == 'local_global' else 'all'
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_regions = math.prod(g // r for g, r in zip(self.grid_size, self.region_size))
        self.num_prefix_tokens = self.num_regions if attn_type == 'local_global' else 0
        self.grad_checkpointing = False

        self.patch_embed = TubeletEmbed(in_chans, embed_dim, tubelet_size, **dd)
        # fixed, so not a parameter and not in the state dict (the official model keeps it outside it too)
        table = sinusoid_table(math.prod(self.grid_size), embed_dim).reshape(1, *self.grid_size, embed_dim)
        self.register_buffer('pos_embed', table.to(**dd), persistent=False)
        self.pos_drop = nn.Dropout(drop_rate)
        if attn_type == 'local_global':
            self.region_tokens = nn.Parameter(torch.zeros(self.num_regions, embed_dim, **dd))
        else:
            self.region_tokens = None

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device='cpu')]
        common = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate, attn_drop=attn_drop_rate, **dd)
        if attn_type == 'local_global':
            blocks = [LgiBlock(
                embed_dim, num_heads, first_attn_type=first_attn_type, third_attn_type=third_attn_type,
                drop_path=dpr[i], **common) for i in range(depth)]
        else:
            blocks = [JointBlock(embed_dim, num_heads, drop_path=dpr[i], **common) for i in range(depth)]
        self.blocks = nn.Sequential(*blocks)
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=PATCH_SIZE, temporal_reduction=tubelet_size)
            for i in range(depth)]
        self.norm = nn.Identity()  # mean pooling: the norm comes after the pool (fc_norm), as in the official model
        self.fc_norm = _norm_layer(embed_dim, **dd)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.init_weights(init_scale)

    def init_weights(self, init_scale: float = 0.001) -> None:
        """The official fine-tuning init: truncated normal linears, unit LayerNorms, a down-scaled classifier. It sets
        every parameter and buffer (as timm's models do, e.g. after ``device='meta'`` and ``to_empty()``): the
        tubelet convolution's default init, zero v biases and the fixed position table too."""
        with torch.no_grad():
            table = sinusoid_table(math.prod(self.grid_size), self.embed_dim).reshape(self.pos_embed.shape)
            self.pos_embed.copy_(table.to(self.pos_embed.device, self.pos_embed.dtype))
        self.patch_embed.proj.reset_parameters()
        if self.region_tokens is not None:
            trunc_normal_(self.region_tokens, std=.02)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif getattr(module, 'v_bias', None) is not None:
                nn.init.zeros_(module.v_bias)
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(init_scale)
                self.head.bias.mul_(init_scale)

    @staticmethod
    def sizes_of_weights(weights: Dict[str, Any]) -> Dict[str, Any]:
        """The constructor sizes a state dict of this model fixes: input channels only (the position table is
        fixed, not learned, so frames and resolution are free)."""
        weight = weights.get('patch_embed.proj.weight')
        return {} if weight is None else dict(in_chans=weight.shape[1])

    def architecture_args(self) -> Dict[str, Any]:
        """Constructor arguments the weights do not fix but their meaning depends on (recorded in exports)."""
        first = self.blocks[0]
        args = dict(num_frames=self.num_frames, num_heads=first.attn.num_heads if self.attn_type == 'joint' else
                    first.local_attn.num_heads, attn_type=self.attn_type, classify_tokens=self.classify_tokens,
                    global_pool=self.global_pool, input_layout=self.input_layout)
        if self.attn_type == 'local_global':
            args.update(region_size=self.region_size, first_attn_type=first.first_attn_type,
                        third_attn_type=first.third_attn_type)
        return args

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {'region_tokens'} if self.region_tokens is not None else set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^patch_embed|^region_tokens',
            blocks=r'^blocks\.(\d+)' if coarse else [(r'^blocks\.(\d+)', None), (r'^fc_norm', (99999,))],
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError (TypeError for a dtype) naming the problem and the fix when ``x`` is not a valid clip."""
        check_clip(
            x, self.in_chans, self.input_layout, self.num_frames, self.img_size, False,
            self.patch_embed.proj.weight.dtype, model_name='MAE-DFER',
            value_range='ImageNet mean / std normalised RGB values')

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip to the position-embedded token grid ``(B, T/t, H/16, W/16, C)``."""
        self.check_input(x)
        x = self.patch_embed(x if self.input_layout == 'BCTHW' else x.transpose(1, 2))  # 'b t c h w -> b c t h w'
        return self.pos_drop(x + self.pos_embed.to(x.dtype))

    def _to_regions(self, grid: torch.Tensor) -> torch.Tensor:
        """Token grid to regions ``(B, N, 1 + S, C)``, each region's token first."""
        regions = window_partition(grid, self.region_size)  # 'b (nt t) (nh h) (nw w) c -> b (nt nh nw) (t h w) c'
        tokens = self.region_tokens.to(regions.dtype)[None, :, None].expand(regions.shape[0], -1, -1, -1)
        return torch.cat((tokens, regions), dim=2)

    def _grid_of(self, x: torch.Tensor) -> torch.Tensor:
        """Block output to the token grid ``(B, T', H', W', C)`` (region tokens dropped)."""
        if self.attn_type == 'local_global':
            return window_merge(x[:, :, 1:], self.region_size, self.grid_size)
        return x.unflatten(1, self.grid_size)  # 'b (t h w) c -> b t h w c'

    def _tokens_of(self, x: torch.Tensor) -> torch.Tensor:
        """Block output to tokens ``(B, N + L, C)``: the N region tokens (if any), then the grid in (t, h, w) order."""
        grid = self._grid_of(x).flatten(1, 3)
        return torch.cat((x[:, :, 0], grid), dim=1) if self.attn_type == 'local_global' else grid

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.embed(x)
        return self._to_regions(grid) if self.attn_type == 'local_global' else grid.flatten(1, 3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, num_prefix_tokens + T'*H'*W', C)``: region tokens first, then the grid in (t, h, w) order."""
        x = self._start(x)
        if self.grad_checkpointing:
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(self._tokens_of(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average the ``classify_tokens`` ('avg'), LayerNorm, classify; ``pre_logits=True`` stops before the head."""
        if self.global_pool == 'avg':
            if self.classify_tokens == 'region':
                x = x[:, :self.num_prefix_tokens]
            elif self.classify_tokens == 'org':
                x = x[:, self.num_prefix_tokens:]
            x = x.mean(dim=1)
        x = self.fc_norm(x)
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
        """Block outputs of the grid tokens as ``(B, C, T', H', W')`` maps ('NCTHW') or ``(B, T'*H'*W', C)``
        tokens ('NLC'); region tokens are left out (they are in the final tokens). Arguments as LogoFormer's."""
        output_fmt = resolve_output_fmt(output_fmt)

        def take(x: torch.Tensor) -> torch.Tensor:
            y = self._grid_of(x)
            return grid_as(self.norm(y) if norm else y, output_fmt)

        x, intermediates = self.run_blocks(self._start(x), indices, stop_early, take)
        if intermediates_only:
            return intermediates
        return self.norm(self._tokens_of(x)), intermediates


# official key (as utils.save_model writes it) -> ours; the rules apply in order, the first match wins
_OFFICIAL_KEY_RULES = (
    (r'^lg_region_tokens$', 'region_tokens'),
    (r'\.first_attn_norm0\.', '.local_norm.'),
    (r'\.first_attn_norm1\.', '.local_context_norm.'),
    (r'\.first_attn\.', '.local_attn.'),
    (r'\.second_attn_norm0\.', '.global_norm.'),
    (r'\.second_attn\.', '.global_attn.'),
    (r'\.third_attn_norm0\.', '.interact_norm.'),
    (r'\.third_attn_norm1\.', '.interact_context_norm.'),
    (r'\.third_attn\.', '.interact_attn.'),
    (r'\.q_bias$', '.q.bias'),  # VideoMAE's separate q bias is the q projection's bias here
)


def _official_to_ours(key: str, value: torch.Tensor) -> Dict[str, torch.Tensor]:
    """One official entry as ours; the joint form's fused qkv weight becomes the q and kv projections."""
    if key.endswith('.attn.qkv.weight'):
        dim = value.shape[0] // 3
        prefix = key[:-len('qkv.weight')]
        return {prefix + 'q.weight': value[:dim], prefix + 'kv.weight': value[dim:]}
    for pattern, replacement in _OFFICIAL_KEY_RULES:
        key = re.sub(pattern, replacement, key)
    return {key: value}


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: MaeDfer) -> Dict[str, torch.Tensor]:
    """An official MAE-DFER checkpoint (or this model's own state dict) as ``model``'s state dict.

    The official file is ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` (+ ``'model_ema'`` when trained
    with EMA). Its evaluation loads ``'model'`` (``--model_key model|module``), which is the entry
    :func:`~logoformer_timm.weights.files.unwrap_checkpoint` takes on every route. Our own files (a state dict, or a training container) load as they are.
    Anything that does not fit raises :class:`CheckpointMismatchError` naming the keys.
    """
    state_dict = unwrap_checkpoint(state_dict)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        out.update({key: value} if key in target else _official_to_ours(key, value))
    check_same_architecture(
        out, target, 'MAE-DFER',
        hint='attn_type, depth, embed_dim, num_heads, region_size, first_attn_type, third_attn_type, num_frames, '
             'img_size, tubelet_size, qkv_bias')
    check_weights(out, 'the weights', target)
    return out


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 7,
        'num_frames': 16,
        'input_size': (3, 160, 160),  # one frame; a model built with dynamic_img_size=True takes other sizes
        'fixed_input_size': True,
        'pool_size': (8, 10, 10),  # the unpooled token grid (T', H', W') of a 16 x 160 x 160 clip
        # the official test transform resizes every frame to 160 x 160 (bilinear), so its two 'spatial crops' are
        # the whole frame: no centre crop
        'crop_pct': 1.0,
        'crop_mode': 'squash',
        'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj',
        'classifier': 'head',
        'label_names': DFER_LABELS,
        'license': 'mit',
        'paper_ids': 'arXiv:2307.02227',
        'paper_name': 'MAE-DFER: Efficient Masked Autoencoder for Self-supervised Dynamic Facial Expression Recognition',
        **kwargs,
    }


_README = 'the README of github.com/sunlicai/MAE-DFER (commit 80b651d), fine-tuned checkpoint tables'
_DRIVE = 'https://drive.google.com/file/d/{}/view?usp=sharing'
# tag -> (dataset, fold, UAR, WAR, Google Drive id of the 'checkpoint' link in the README's table)
_RELEASED = {
    'dfew_fold1': ('DFEW', 1, 62.59, 74.88, '1wRxwEZlrc3z3DqQ84xm_olmqRsj2obH3'),
    'dfew_fold2': ('DFEW', 2, 61.96, 72.49, '1lY4L2PMVWuF93K6_VqEl7QrPoSK0SvaQ'),
    'dfew_fold3': ('DFEW', 3, 64.00, 74.91, '1FPKxBoGO3VXvLhcHY8iOPb9lQPi0_C1z'),
    'dfew_fold4': ('DFEW', 4, 63.07, 74.05, '1yFDc1n8SaTEQWrVX8k65loQm45rfwQeO'),
    'dfew_fold5': ('DFEW', 5, 65.42, 75.81, '1wmXO4M2kjpAOnvof8CmpJE6wUrxMUOgw'),
    'ferv39k': ('FERV39K', None, 43.29, 52.50, '1vq9WxuV229spEX7JQCMTluLXvvefLRzq'),
    'mafw_fold1': ('MAFW', 1, 36.11, 46.71, '1BXTp-2mdy0fvrcjwFsZ4fPY53E4DotvR'),
    'mafw_fold2': ('MAFW', 2, 42.37, 54.82, '1Lzm50nPzZtTODfNYSkSLm09mhExHu2eL'),
    'mafw_fold3': ('MAFW', 3, 46.25, 58.87, '1WlCTw5OjV6SZ7L7rU5xzvbVD_GTcp8CC'),
    'mafw_fold4': ('MAFW', 4, 45.42, 59.50, '18fdMGu-GdYxUmCEG-33NR3hxvHFyrO-v'),
    'mafw_fold5': ('MAFW', 5, 41.66, 55.27, '1CO6OY-P6oM5LMikLTlB5iz_AXack2vfH'),
}


def _released_cfgs() -> Dict[str, Any]:
    cfgs = {}
    for tag, (dataset, fold, uar, war, drive_id) in _RELEASED.items():
        split = f'fold {fold}' if fold else 'all scenes'
        stride = 1 if dataset == 'FERV39K' else 4  # scripts/<dataset>/*.sh: --sampling_rate
        note = ' (the authors re-trained it: "reproduced", the original file was lost)' if dataset != 'DFEW' else ''
        description = (
            f"MAE-DFER fine-tuned on {dataset} {split}{note}: the 'checkpoint' link of that row of the README's "
            f"table (a .pth file, {{'model', 'optimizer', 'epoch', 'scaler', 'args'}}). Official test input: 16 "
            f"frames at sampling rate {stride}, every frame resized to 160 x 160 (bilinear), ImageNet mean / std; "
            f"the reported numbers average 2 temporal x 2 spatial views (the cfg's test_protocol).")
        labels = dict(num_classes=11, label_names=MAFW_LABELS) if dataset == 'MAFW' else {}
        protocol = dict(test_protocol=f'mae_dfer_{dataset.lower()}')  # logoformer_timm.data.TEST_PROTOCOLS
        cfgs[f'mae_dfer.{tag}'] = released_cfg(
            f'mae_dfer.{tag}', _cfg(**labels, **protocol), _DRIVE.format(drive_id), description,
            ReportedResult(dataset, fold, uar, war, _README))
    return clip_default_cfgs(cfgs)


default_cfgs = _released_cfgs()


def _create_mae_dfer(variant: str, pretrained: bool = False, **kwargs) -> MaeDfer:
    build_kwargs = dict(
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=kwargs.get('depth', 16), feature_cls='getter'),  # all blocks
    )
    model = build_clip_model(MaeDfer, variant, pretrained, **build_kwargs, **kwargs)
    if kwargs.get('features_only'):
        label_feature_maps(model, 'NLC' if kwargs.get('attn_type') == 'joint' else MaeDfer.block_output_fmt)
    return model


@register_model
def mae_dfer(pretrained: bool = False, **kwargs) -> MaeDfer:
    """MAE-DFER (LGI-Former, C=512, 16 blocks, 8 heads, regions 2x5x10) at 16 x 160 x 160, as the authors fine-tuned it."""
    return _create_mae_dfer('mae_dfer', pretrained=pretrained, **kwargs)
