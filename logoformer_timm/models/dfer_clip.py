""" DFER-CLIP: the CLIP-based video classifier for dynamic facial expression recognition, loading the authors' files

Paper: `Prompting Visual-Language Models for Dynamic Facial Expression Recognition`
    - Zengqun Zhao, Ioannis Patras, BMVC 2023, https://arxiv.org/abs/2308.13382
Official code and weights (MIT): https://github.com/zengqunzhao/DFER-CLIP

Written for this project from the paper and the official model's structure (not a copy of its code):

* per frame, the OpenAI CLIP ViT-B/32 image tower (timm's ``VisionTransformer`` as timm builds
  ``vit_base_patch32_clip_quickgelu_224``): one 512-d embedding per frame;
* the temporal Transformer of the official ``Temporal_Model.py``: a class token and a learned position embedding,
  one pre-norm layer (512 wide, 8 heads of 64, MLP 1024, tanh-approximated GELU), the class token's output;
* a cosine classifier: logits = 100 x cosine similarity of that video feature with one embedding per class.

In the official model a class's embedding is the CLIP text tower's feature of a learned prompt (learned context
vectors, then the embedded description of the class), re-computed on every forward pass. It depends on the weights
alone, so :func:`checkpoint_filter_fn` computes it once when it reads an official file and stores it as the
classifier's weight: this model has no text tower, tokenizer or prompt text, and is a plain video classifier.

Input is a clip ``(B, C, T, H, W)`` (or ``(B, T, C, H, W)`` with ``input_layout='BTCHW'``, the official code's
layout), RGB in [0, 1] (pixels / 255, no mean/std: the official loader feeds CLIP so).
"""
from functools import partial
from typing import Any, Dict, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_act_layer, get_device_dtype, resample_abs_pos_embed, trunc_normal_
from timm.models import register_model
from timm.models._manipulate import named_apply
from timm.models.vision_transformer import Block, VisionTransformer, _convert_openai_clip

from ..data.protocol import DFER_CLIP_MAFW_LABELS as MAFW_LABELS  # DFER-CLIP's MAFW order, not MAE-DFER's
from ..layers import (
    INPUT_LAYOUTS, MAX_NUM_FRAMES, check_choice, check_clip, check_heads, check_img_size, check_int)
from ..weights.files import check_weights, unwrap_checkpoint
from ..weights.filtering import CheckpointMismatchError, check_same_architecture
from ..weights.pretrained import build_clip_model, clip_default_cfgs
from ._clip_api import FrameTokenApi, label_feature_maps
from .former_dfer import official_layer_key, resample_with_class_token
from .logoformer import _cfg as _dfer_cfg, _init_linear
from .released import ReportedResult, released_cfg

__all__ = [
    'DferClip', 'CITATION', 'MAFW_LABELS', 'CosineClassifier', 'ClipTextTower', 'checkpoint_filter_fn', 'class_embeddings']

CITATION = """@inproceedings{zhao2023dferclip,
  title={Prompting Visual-Language Models for Dynamic Facial Expression Recognition},
  author={Zhao, Zengqun and Patras, Ioannis},
  booktitle={British Machine Vision Conference (BMVC)},
  pages={1--14},
  year={2023}
}"""

CLIP_EOT_TOKEN = 49407  # the end-of-text token of CLIP's tokenizer (the last id of its vocabulary)
_clip_norm = partial(nn.LayerNorm, eps=1e-5)


class CosineClassifier(nn.Module):
    """``scale`` x cosine similarity of the input with one embedding per class (the rows of ``weight``)."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 100., device=None, dtype=None):
        super().__init__()
        self.in_features, self.num_classes, self.scale = in_features, num_classes, scale
        self.weight = nn.Parameter(torch.empty(num_classes, in_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """New class embeddings: random directions (their length does not matter to a cosine)."""
        nn.init.normal_(self.weight, std=self.in_features ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1)) * self.scale


class ClipTextTower(nn.Module):
    """CLIP's causal text Transformer on prompt embeddings ``(N, L, C)``: the feature at each prompt's end-of-text
    position, projected. Only :func:`checkpoint_filter_fn` uses it, to turn an official file's prompts into class
    embeddings; the model never holds it."""

    def __init__(self, width: int, depth: int, context_length: int, embed_dim: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        # CLIP's text blocks: 64-wide heads, QuickGELU MLP of 4 x width, biased q/k/v
        self.blocks = nn.ModuleList([
            Block(width, width // 64, qkv_bias=True, norm_layer=_clip_norm, act_layer=get_act_layer('quick_gelu'),
                  **dd)
            for _ in range(depth)])
        self.pos_embed = nn.Parameter(torch.empty(context_length, width, **dd))
        self.norm = _clip_norm(width, **dd)
        self.proj = nn.Parameter(torch.empty(width, embed_dim, **dd))

    def forward(self, prompts: torch.Tensor, eot_positions: torch.Tensor) -> torch.Tensor:
        x = prompts + self.pos_embed
        causal = torch.full((x.shape[1], x.shape[1]), float('-inf'), device=x.device, dtype=x.dtype).triu(1)
        for block in self.blocks:
            x = block(x, attn_mask=causal)
        x = self.norm(x)
        return x[torch.arange(x.shape[0]), eot_positions] @ self.proj


class DferClip(FrameTokenApi, nn.Module):
    """DFER-CLIP for clips ``(B, C, T, H, W)``; see the module docstring and ``docs/architecture.md``."""

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            num_frames: int = 16,
            in_chans: int = 3,
            num_classes: int = 7,
            global_pool: str = 'token',
            patch_size: int = 32,
            frame_embed_dim: int = 768,
            frame_depth: int = 12,
            frame_num_heads: int = 12,
            embed_dim: int = 512,
            depth: int = 1,
            num_heads: int = 8,
            mlp_ratio: float = 2.,
            logit_scale: float = 100.,
            drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            input_layout: str = 'BCTHW',
            device=None,
            dtype=None,
    ):
        """
        Args:
            img_size: Input resolution (int or (H, W)), a multiple of ``patch_size`` (official: 224).
            num_frames: Frames per clip the temporal position embedding is built for (official: 16).
            in_chans: Input channels.
            num_classes: Classes of the cosine classifier (0 for none).
            global_pool: 'token' (the class token, official), 'avg' (mean of the frame tokens) or '' (all tokens).
            patch_size: Patch size of the CLIP image tower (official: 32, ViT-B/32).
            frame_embed_dim: Width of the image tower (official: 768).
            frame_depth: Blocks of the image tower (official: 12).
            frame_num_heads: Heads of the image tower (official: 12).
            embed_dim: CLIP's joint embedding width: the image tower's output and the temporal Transformer's width
                (official: 512).
            depth: Temporal Transformer layers (official: 1, ``--temporal-layers``).
            num_heads: Heads of the temporal layers (official: 8, of width 64).
            mlp_ratio: MLP width of the temporal layers as a multiple of ``embed_dim`` (official: 2).
            logit_scale: The classifier's fixed scale of the cosine similarities (official: 1 / 0.01).
            drop_rate: Dropout after the temporal position embedding and before the classifier.
            attn_drop_rate: Dropout on the temporal layers' attention weights.
            proj_drop_rate: Dropout after the temporal layers' projections (official: 0).
            drop_path_rate: Stochastic depth over the temporal layers, linearly increasing.
            input_layout: 'BCTHW' or 'BTCHW' (the official code's layout); never guessed from shapes.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        img_size = check_img_size(img_size)
        num_frames = check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
        for name, value in (('in_chans', in_chans), ('patch_size', patch_size), ('frame_depth', frame_depth),
                            ('frame_num_heads', frame_num_heads), ('depth', depth), ('num_heads', num_heads)):
            check_int(name, value, 1)
        check_int('num_classes', num_classes, 0)
        check_choice('input_layout', input_layout, INPUT_LAYOUTS)
        check_choice('global_pool', global_pool, self.global_pools)
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f'img_size {img_size} must be a multiple of patch_size ({patch_size}).')
        check_heads((('frame_num_heads', frame_embed_dim, frame_num_heads), ('num_heads', embed_dim, num_heads)))

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.img_size = img_size
        self.num_frames = num_frames
        self.input_layout = input_layout
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.logit_scale = logit_scale
        # the temporal Transformer's token grid: one token per frame (intermediates are (B, C, T, 1, 1) maps)
        self.grid_size = (num_frames, 1, 1)
        self.grad_checkpointing = False

        # OpenAI CLIP's image tower: pre-norm (ln_pre), QuickGELU, class token, its projection as timm's head
        self.image_encoder = VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=embed_dim, global_pool='token',
            embed_dim=frame_embed_dim, depth=frame_depth, num_heads=frame_num_heads, pre_norm=True,
            norm_layer=_clip_norm, act_layer=get_act_layer('quick_gelu'), **dd)
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim, **dd))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + num_frames, embed_dim, **dd))  # class token first
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device='cpu')]
        # the official GELU module is the tanh approximation, written out; nn.GELU computes the same formula
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=False, proj_drop=proj_drop_rate,
                  attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=nn.LayerNorm,
                  act_layer=partial(nn.GELU, approximate='tanh'), **dd)
            for i in range(depth)])
        # each temporal token pools a whole frame: its map is 1x1, so the spatial reduction is the frame height
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=img_size[0], temporal_reduction=1)
            for i in range(depth)]
        self.norm = nn.Identity()  # the official class token goes to the classifier un-normalised
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self.new_head(num_classes) if num_classes > 0 else nn.Identity()

        self.init_weights()

    def init_weights(self) -> None:
        """Initialise every parameter (as timm's models do, e.g. after ``device='meta'`` and ``to_empty()``): timm's
        ViT init for the image tower, ViT-style init for the temporal Transformer, random class embeddings."""
        self.image_encoder.init_weights()
        for param in (self.pos_embed, self.cls_token):
            trunc_normal_(param, std=.02)
        named_apply(_init_linear, self.blocks)
        for module in self.blocks.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        if isinstance(self.head, CosineClassifier):
            self.head.reset_parameters()

    @staticmethod
    def sizes_of_weights(weights: Dict[str, Any]) -> Dict[str, Any]:
        """The constructor sizes a state dict of this model (our keys) fixes: frames (the temporal embedding, class
        token first), resolution and patch size (the image tower's embeddings) and input channels."""
        sizes = {}
        if 'pos_embed' in weights:
            sizes['num_frames'] = weights['pos_embed'].shape[1] - 1
        patch = weights.get('image_encoder.patch_embed.proj.weight')
        pos = weights.get('image_encoder.pos_embed')
        if patch is not None:
            sizes.update(in_chans=patch.shape[1], patch_size=patch.shape[2])
            if pos is not None:
                side = round((pos.shape[1] - 1) ** 0.5)  # a square grid of patches after the class token
                sizes['img_size'] = [side * patch.shape[2]] * 2
        return sizes

    def architecture_args(self) -> Dict[str, Any]:
        """Constructor arguments that define the architecture (recorded in exports): widths and depths too, so that
        an export of a non-default configuration (e.g. another CLIP image tower) rebuilds as it was."""
        tower = self.image_encoder
        return dict(
            img_size=list(self.img_size), num_frames=self.num_frames, patch_size=tower.patch_embed.patch_size[0],
            frame_embed_dim=tower.embed_dim, frame_depth=len(tower.blocks),
            frame_num_heads=tower.blocks[0].attn.num_heads,
            embed_dim=self.embed_dim, depth=len(self.blocks), num_heads=self.blocks[0].attn.num_heads,
            mlp_ratio=self.blocks[0].mlp.fc1.out_features / self.embed_dim, logit_scale=self.logit_scale,
            global_pool=self.global_pool, input_layout=self.input_layout)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {'pos_embed', 'cls_token', 'image_encoder.pos_embed', 'image_encoder.cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        # the per-frame CLIP image tower is the temporal Transformer's stem
        return dict(
            stem=r'^image_encoder|^cls_token|^pos_embed',
            blocks=r'^blocks\.(\d+)' if coarse else [(r'^blocks\.(\d+)', None)],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.image_encoder.set_grad_checkpointing(enable)

    def new_head(self, num_classes: int) -> nn.Module:
        """A new cosine classifier (``reset_classifier``): ``num_classes`` random class embeddings, the same scale.

        The class embeddings of an official file are text features of its prompts; a new head starts from random
        directions in the same joint space and learns them (fine-tuning), as a linear head would learn its weight.
        """
        return CosineClassifier(self.embed_dim, num_classes, self.logit_scale, **get_device_dtype(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of clips. The clip's type, shape and dtype are checked, its values are not (for speed):
        NaN / Inf pixels give NaN logits (the commands refuse such clips: ``layers.check_finite_pixels``)."""
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError (TypeError for a dtype) naming the problem and the fix when ``x`` is not a valid clip."""
        check_clip(
            x, self.in_chans, self.input_layout, self.num_frames, self.img_size, False,
            self.image_encoder.patch_embed.proj.weight.dtype, model_name='DFER-CLIP')

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clip to the temporal Transformer's input: the class token, then one CLIP embedding per frame ``(B, 1 + T,
        C)``."""
        self.check_input(x)
        frames = x.transpose(1, 2) if self.input_layout == 'BCTHW' else x  # 'b c t h w -> b t c h w' (a view)
        x = self.image_encoder(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])  # '(b t) c -> b t c'
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.pos_drop(x + self.pos_embed)

# the prompt learner's and the text tower's entries of an official file: what the class embeddings are computed from
_PROMPT = 'prompt_learner.'
_TEXT = 'text_encoder.'
_TOKEN_EMBEDDING = 'clip_model_.token_embedding.weight'


def class_embeddings(weights: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The text feature of every class's learned prompt in an official DFER-CLIP state dict (``module.`` stripped),
    as the official ``PromptLearner`` + ``TextEncoder`` compute it, ``(num_classes, embed_dim)``.

    A prompt is the start-of-text embedding (``token_prefix``), the learned context (``ctx``: one per class or
    shared), then the embedded class description up to the end-of-text token and padding (``token_suffix``; the
    released files put the class text at the end, ``--class-token-position end``). The feature is read at the
    end-of-text position: where ``token_suffix`` holds the end-of-text token's row of ``token_embedding`` (the
    official code takes the argmax of the token ids, the same position), so no tokenizer or prompt text is needed.
    """
    needed = [_PROMPT + 'ctx', _PROMPT + 'token_prefix', _PROMPT + 'token_suffix', _TOKEN_EMBEDDING,
              _TEXT + 'positional_embedding', _TEXT + 'ln_final.weight', _TEXT + 'text_projection']
    missing = [k for k in needed if k not in weights]
    if missing:
        raise CheckpointMismatchError(
            f'the weights are not a complete DFER-CLIP file: missing {", ".join(missing)}; pass the .pth file the '
            f'authors distributed (its state_dict holds the prompt learner and the CLIP text tower).')
    prefix, suffix = weights[_PROMPT + 'token_prefix'], weights[_PROMPT + 'token_suffix']
    ctx = weights[_PROMPT + 'ctx']
    if ctx.ndim == 2:  # one context shared by the classes (--class-specific-contexts False)
        ctx = ctx.expand(prefix.shape[0], -1, -1)
    is_eot = (suffix == weights[_TOKEN_EMBEDDING][CLIP_EOT_TOKEN]).all(-1)
    found = is_eot.sum(-1)
    if not bool((found == 1).all()):
        raise CheckpointMismatchError(
            f'the end-of-text token is not found exactly once in the prompt of every class (counts '
            f'{found.tolist()}): prompt_learner.token_suffix does not come from this file\'s token_embedding.')
    eot_positions = prefix.shape[1] + ctx.shape[1] + is_eot.int().argmax(-1)

    blocks = {k[len(_TEXT):]: v for k, v in weights.items() if k.startswith(_TEXT + 'transformer.resblocks.')}
    # OpenAI's block keys as timm's (transformer.resblocks. -> blocks., attn.in_proj_ -> attn.qkv., ln_1 -> norm1,
    # ...), as timm converts the image tower
    blocks = _convert_openai_clip(blocks, None, prefix='')
    pos, proj = weights[_TEXT + 'positional_embedding'], weights[_TEXT + 'text_projection']
    depth = 1 + max(int(k.split('.')[1]) for k in blocks)
    tower = ClipTextTower(pos.shape[1], depth, pos.shape[0], proj.shape[1], device='meta')
    norm = {f'norm.{n}': weights[f'{_TEXT}ln_final.{n}'] for n in ('weight', 'bias')}
    tower.load_state_dict(dict(blocks, pos_embed=pos, proj=proj, **norm), assign=True)
    with torch.no_grad():
        return tower(torch.cat((prefix, ctx, suffix), dim=1), eot_positions)


def _official_to_ours(state_dict: Dict[str, Any], model: DferClip) -> Dict[str, Any]:
    """An official state dict as ours: the image tower (``image_encoder.*``, OpenAI's layout), the temporal net and
    the class embeddings; the second copy of CLIP (``clip_model_.*``), the text tower and the prompts are dropped."""
    out = {f'image_encoder.{k}': v for k, v in _convert_openai_clip(
        state_dict, model.image_encoder, prefix='image_encoder.').items()}
    for key, value in state_dict.items():
        if key.startswith('temporal_net.'):
            key = key[len('temporal_net.'):].replace('pos_embedding', 'pos_embed')
            out[official_layer_key(key.replace('temporal_transformer.layers.', 'blocks.'))] = value
    out['head.weight'] = class_embeddings(state_dict)
    return out


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: DferClip) -> Dict[str, torch.Tensor]:
    """Adapt DFER-CLIP weights to ``model``: the official file as distributed, or this model's own keys.

    The official file (``main.py``'s ``save_checkpoint``) is ``{'epoch', 'state_dict', 'best_acc', 'optimizer',
    'recorder'}`` with ``module.``-prefixed keys (DataParallel); only ``state_dict`` is used. Its CLIP image tower is
    mapped to timm's layout as timm maps OpenAI CLIP weights, and the class embeddings are computed from its prompt
    learner and text tower (:func:`class_embeddings`). Both position embeddings are resampled to the model's frames /
    resolution. Anything that does not fit raises :class:`CheckpointMismatchError`.
    """
    state_dict = unwrap_checkpoint(state_dict)
    if _PROMPT + 'ctx' in state_dict:
        state_dict = _official_to_ours(state_dict, model)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key in target and torch.is_tensor(value) and value.ndim == target[key].ndim:
            if key == 'pos_embed' and value.shape[1] > 1:
                value = resample_with_class_token(value, model.num_frames)
            elif key == 'image_encoder.pos_embed':
                grid = model.image_encoder.patch_embed.grid_size
                value = resample_abs_pos_embed(value, grid, num_prefix_tokens=1)
        out[key] = value
    check_same_architecture(
        out, target, model_name='DFER-CLIP',
        hint='patch_size, frame_embed_dim, frame_depth, embed_dim, depth, mlp_ratio', classifier_prefix='head.')
    check_weights(out, 'the weights', target)
    return out


def _cfg(**kwargs) -> Dict[str, Any]:
    # the official test input: 16 frames of 224 x 224 (the whole face crop resized, bilinear), pixels / 255, no
    # mean/std; DFEW's label order (models/Text.py: happiness, sadness, neutral, anger, surprise, disgust, fear)
    return _dfer_cfg(**{
        'input_size': (3, 224, 224),
        'pool_size': (16, 1, 1),
        'first_conv': 'image_encoder.patch_embed.proj',
        'test_protocol': 'dfer_clip',  # logoformer_timm.data.TEST_PROTOCOLS
        'paper_ids': 'arXiv:2308.13382',
        'paper_name': 'Prompting Visual-Language Models for Dynamic Facial Expression Recognition',
        **kwargs,
    })


_DRIVE = 'https://drive.google.com/file/d/{}/view?usp=drive_link'
_SOURCE = 'img/performance.png of github.com/zengqunzhao/DFER-CLIP (commit d10d5a4), the DFER-CLIP row'
# the authors publish one figure per dataset: the mean over the five fold files (DFEW, MAFW) or the one file's
# (FERV39K); dataset -> (UAR, WAR)
_PUBLISHED = {'DFEW': (59.61, 71.25), 'FERV39K': (41.27, 51.65), 'MAFW': (39.89, 52.55)}
# tag -> (dataset, fold, Google Drive id of the README's link)
_RELEASED = {
    'dfew_fold1': ('DFEW', 1, '1tH1d2zZv2HtcQFPrGuVWJHXmD9sTeddQ'),
    'dfew_fold2': ('DFEW', 2, '1w6yESY3cNwcOCwQa-dTxIHNWBv57PRUR'),
    'dfew_fold3': ('DFEW', 3, '1kmI1XlZdQIr6R33tBdteyrmYl0UgyXv8'),
    'dfew_fold4': ('DFEW', 4, '10pxe7fCtASuKaxpZSGb7nR6EAjN7YSR6'),
    'dfew_fold5': ('DFEW', 5, '161pNBUgR_uPSvptzN4ZI4_L7-tvF9SD8'),
    'ferv39k': ('FERV39K', None, '1lRUw5eTa7TGSEombjHqCPE76oP2c_3fz'),
    'mafw_fold1': ('MAFW', 1, '1vaICPQ9g3gfYpEcRwej6Se5qRb0LzbP6'),
    'mafw_fold2': ('MAFW', 2, '1NCJU33j7yr6t_RXJeR1pO_znrN_jV5EC'),
    'mafw_fold3': ('MAFW', 3, '12MS8ZVh582n2j37zy2Z7V85IwcnxuKC4'),
    'mafw_fold4': ('MAFW', 4, '1Zs6pkzPU2Wkqb5ykrTU-csiu_c8Tpggh'),
    'mafw_fold5': ('MAFW', 5, '1txju5MPe2eODw98Uz16iG3vxTR1GLMrx'),
}


def _released_cfgs() -> Dict[str, Any]:
    cfgs = {}
    for tag, (dataset, fold, drive_id) in _RELEASED.items():
        name = f'dfer_clip.{tag}'
        uar, war = _PUBLISHED[dataset]
        if fold is None:
            reported = ReportedResult(dataset, None, uar, war, _SOURCE)
        else:  # no per-fold figure is published: this file's own result is not reported
            reported = ReportedResult(
                dataset, fold, None, None,
                f'{_SOURCE}: no per-fold figures are published, only the mean over the five {dataset} fold files, '
                f'UAR {uar:.2f} / WAR {war:.2f}')
        split = f'fold {fold}' if fold else 'all scenes'
        labels = (dict(num_classes=11, label_names=MAFW_LABELS, test_protocol='dfer_clip_mafw')
                  if dataset == 'MAFW' else {})
        cfgs[name] = released_cfg(
            name, _cfg(**labels), _DRIVE.format(drive_id),
            f'the DFER-CLIP {dataset} {split} .pth file linked from the README of github.com/zengqunzhao/DFER-CLIP, '
            f'as main.py saved it (trained with train_{dataset if dataset != "FERV39K" else "FERV39k"}.sh: 8 '
            f'class-specific context tokens, class descriptions, one temporal layer). Official test input: 16 frames '
            f'(the middle frame of each of 16 equal segments), 224 x 224, pixels / 255, one view.',
            reported)
    return clip_default_cfgs(cfgs)


default_cfgs = _released_cfgs()


def _create_dfer_clip(variant: str, pretrained: bool = False, **kwargs) -> DferClip:
    build_kwargs = dict(
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=kwargs.get('depth', 1), feature_cls='getter'),  # all temporal layers
    )
    model = build_clip_model(DferClip, variant, pretrained, **build_kwargs, **kwargs)
    if kwargs.get('features_only'):
        label_feature_maps(model, DferClip.block_output_fmt)
    return model


@register_model
def dfer_clip(pretrained: bool = False, **kwargs) -> DferClip:
    """DFER-CLIP as released: CLIP ViT-B/32 per frame, one temporal Transformer layer, a cosine classifier; 16 x 224."""
    return _create_dfer_clip('dfer_clip', pretrained=pretrained, **kwargs)
