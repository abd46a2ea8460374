""" S2D: a landmark-aware image ViT adapted to facial-expression videos, loading the authors' two files

Paper: `From Static to Dynamic: Adapting Landmark-Aware Image Models for Facial Expression Recognition in Videos`
    - Yin Chen, Jia Li, Shiguang Shan, Meng Wang, Richang Hong, IEEE TAFFC 2024, https://arxiv.org/abs/2312.05447
Official code and weights (Apache-2.0): https://github.com/MSA-LMC/S2D

Written for this project from the paper and the official model's structure (not a copy of its code):

* a frozen MobileFaceNet landmark network (:class:`~logoformer_timm.layers.mobilefacenet.MobileFaceNetTrunk`) reads
  every normalised frame, resized bilinearly (``align_corners=True``) to 8 x the patch grid (112 for 224 x 224),
  and gives a landmark map on the patch grid (128 channels), embedded to the ViT width;
* per frame a ViT-B/16 (timm's blocks, class token, a fixed position embedding) with a learned temporal embedding
  added to every token of frame t;
* before every block a landmark-guided prompt (:class:`LandmarkPrompt`): the frame tokens and the previous prompt
  (the landmark embedding for the first) are squeezed to 8 channels, the frame's through a Fovea gate (a softmax
  over positions, per channel, with a learned sharpness), added, and expanded back; a temporal adapter (attention
  of every position across the frames) and a spatial MLP adapter add their output too. The class token is left
  alone; the first prompt is added before the position embeddings;
* ``ln_post``, then the I3D-style head: each frame's class token, mean over the frames, dropout, a linear classifier.

Input is a clip ``(B, C, T, H, W)`` (or ``(B, T, C, H, W)`` with ``input_layout='BTCHW'``) normalised with the
ImageNet mean / std, as the official test transform gives it (the landmark network sees the same normalised frames).
The authors distribute two files: the fine-tuned model and the landmark network; both load into one model
(:func:`checkpoint_filter_fn`), and a ``logoformer-hub export`` holds both in one safetensors.
"""
import re
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import Format, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Attention, Block

from ..data.protocol import DFER_LABELS, S2D_FERV39K_LABELS, S2D_MAFW_LABELS
from ..layers import (
    INPUT_LAYOUTS, MAX_NUM_FRAMES, check_choice, check_clip, check_heads, check_img_size, check_int, rearrange,
    resample_temporal_pos_embed)
from ..layers.mobilefacenet import LANDMARK_CHANS, MobileFaceNetTrunk, landmark_input_size
from ..weights.files import check_weights, unwrap_checkpoint
from ..weights.filtering import CheckpointMismatchError, check_same_architecture
from ..weights.pretrained import build_clip_model, clip_default_cfgs
from ._clip_api import ClipModelApi, grid_as, label_feature_maps, resolve_output_fmt
from .released import ReportedResult, released_cfg

__all__ = ['S2D', 'CITATION', 'FrameBlock', 'LandmarkPrompt', 'LANDMARK_FILE', 'checkpoint_filter_fn']

CITATION = """@article{chen2024s2d,
  title={From Static to Dynamic: Adapting Landmark-Aware Image Models for Facial Expression Recognition in Videos},
  author={Chen, Yin and Li, Jia and Shan, Shiguang and Wang, Meng and Hong, Richang},
  journal={IEEE Transactions on Affective Computing},
  year={2024},
  doi={10.1109/TAFFC.2024.3453443}
}"""

# where the authors publish the landmark network's weights (committed in their repository)
LANDMARK_FILE = ('landmark/mobilefacenet_model_best.pth.tar of https://github.com/MSA-LMC/S2D '
                 '(https://github.com/MSA-LMC/S2D/raw/main/landmark/mobilefacenet_model_best.pth.tar)')
_norm_layer = partial(nn.LayerNorm, eps=1e-6)


class Adapter(nn.Module):
    """Bottleneck MLP ``dim -> hidden -> dim`` (GELU); with ``num_heads`` the hidden tokens attend to each other."""

    def __init__(self, dim: int, hidden: int, num_heads: int = 0, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.act = nn.GELU()
        self.attn = Attention(hidden, num_heads, qkv_bias=False, **dd) if num_heads else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.attn(self.act(self.fc1(x))))


class LandmarkPrompt(nn.Module):
    """One landmark-guided prompt: frame tokens and landmark tokens ``(B, T, N, C)`` to the prompt (the next
    landmark tokens) and the adapters' output, both ``(B, T, N, C)``.

    The official block works on ``(C, H, W)`` maps with 1x1 convolutions; on tokens they are linear layers and the
    Fovea gate's spatial softmax is a softmax over the tokens.
    """

    def __init__(self, dim: int, hidden: int = 8, adapter_ratio: float = 0.25, adapter_heads: int = 8,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.frame_proj = nn.Linear(dim, hidden, **dd)
        self.landmark_proj = nn.Linear(dim, hidden, **dd)
        self.fovea_smooth = nn.Parameter(torch.full((1,), 10., **dd))  # the gate's learned sharpness
        self.out_proj = nn.Linear(hidden, dim, **dd)
        adapter_dim = int(dim * adapter_ratio)
        self.temporal_adapter = Adapter(dim, adapter_dim, adapter_heads, **dd)
        self.adapter_norm = nn.LayerNorm(dim, **dd)  # torch's default eps, as the official adapter's
        self.spatial_adapter = Adapter(dim, adapter_dim, **dd)

    def fovea(self, x: torch.Tensor) -> torch.Tensor:
        """Each channel re-weighted by a softmax over the positions of its own (sharpened) values."""
        return (x * self.fovea_smooth).softmax(dim=-2) * x

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        prompt = self.out_proj(self.fovea(self.frame_proj(x)) + self.landmark_proj(landmarks))
        # every position attends across the clip's frames
        xt = self.temporal_adapter(rearrange(x, 'b t n c -> (b n) t c'))
        xt = rearrange(xt, '(b n) t c -> b t n c', n=x.shape[2])
        return prompt, self.spatial_adapter(self.adapter_norm(xt))


class FrameBlock(Block):
    """timm's ViT block applied to every frame of ``(B, T, L, C)`` tokens (the same keys as a ``Block``)."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return super().forward(x.flatten(0, 1), attn_mask).reshape(x.shape)


class S2D(ClipModelApi, nn.Module):
    """S2D for clips ``(B, C, T, H, W)``: see the module docstring."""

    final_norm_names = ('ln_post',)
    global_pools = ('token', 'avg', '')  # frames' class tokens (the official I3D head), mean of patch tokens, all
    block_output_fmt = 'NTLC'  # per frame: (B, T, 1 + H'*W', C), each frame's class token first
    # the authors' second file, the landmark network: pretrained_cfg_overlay key -> its state-dict prefix here
    extra_weight_files = {'landmark_file': 'landmark.'}

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            num_frames: int = 16,
            in_chans: int = 3,
            num_classes: int = 7,
            global_pool: str = 'token',
            patch_size: int = 16,
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 12,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            prompt_dim: int = 8,
            adapter_ratio: float = 0.25,
            adapter_heads: int = 8,
            drop_rate: float = 0.5,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            input_layout: str = 'BCTHW',
            device=None,
            dtype=None,
    ):
        """
        Args:
            img_size: Input resolution (int or (H, W)), a multiple of ``patch_size`` (official: 224).
            num_frames: Frames per clip (official: 16): the temporal embedding and adapters' length.
            in_chans: Input channels (3: the landmark network reads RGB frames).
            num_classes: Classifier outputs (0 for none).
            global_pool: 'token' (mean of the frames' class tokens, the official head), 'avg' (mean of every patch
                token) or '' (all tokens).
            patch_size: ViT patch size (official: 16); the landmark map is resized to the patch grid's size.
            embed_dim: ViT width (official: 768).
            depth: ViT blocks, each with its landmark prompt (official: 12).
            num_heads: ViT attention heads (official: 12).
            mlp_ratio: ViT MLP width as a multiple of ``embed_dim``.
            qkv_bias: ViT q, k, v biases.
            prompt_dim: Channels of the prompts' bottleneck (official: 8).
            adapter_ratio: Adapters' hidden width as a fraction of ``embed_dim`` (official: 0.25).
            adapter_heads: Heads of the temporal adapter's attention (official: 8).
            drop_rate: Dropout before the classifier (official: 0.5, the I3D head's).
            pos_drop_rate: Dropout after the position embeddings.
            proj_drop_rate: Dropout after the ViT blocks' projections.
            attn_drop_rate: Dropout on the ViT blocks' attention weights.
            drop_path_rate: Stochastic depth over the blocks, linearly increasing.
            input_layout: 'BCTHW' or 'BTCHW'; never guessed from shapes.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        img_size = check_img_size(img_size)
        num_frames = check_int('num_frames', num_frames, 1, MAX_NUM_FRAMES)
        for name, value in (('patch_size', patch_size), ('embed_dim', embed_dim), ('depth', depth),
                            ('num_heads', num_heads), ('prompt_dim', prompt_dim), ('adapter_heads', adapter_heads)):
            check_int(name, value, 1)
        check_int('in_chans', in_chans, 3, 3)
        check_int('num_classes', num_classes, 0)
        check_choice('input_layout', input_layout, INPUT_LAYOUTS)
        check_choice('global_pool', global_pool, self.global_pools)
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f'img_size {img_size} must be a multiple of patch_size ({patch_size}).')
        check_heads((('num_heads', embed_dim, num_heads),
                     ('adapter_heads', int(embed_dim * adapter_ratio), adapter_heads)))

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.img_size = img_size
        self.num_frames = num_frames
        self.input_layout = input_layout
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = num_frames  # one class token per frame
        self.grid_size = (num_frames, img_size[0] // patch_size, img_size[1] // patch_size)
        self.landmark_size = landmark_input_size(self.grid_size[1:])
        self.grad_checkpointing = False

        self.landmark = MobileFaceNetTrunk(**dd)
        self.landmark_embed = nn.Linear(LANDMARK_CHANS, embed_dim, **dd)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, **dd)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        # the image model's position embedding, fixed in S2D's training: a buffer (kept in the state dict)
        self.register_buffer('pos_embed', torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim, **dd))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim, **dd))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.prompts = nn.ModuleList([
            LandmarkPrompt(embed_dim, prompt_dim, adapter_ratio, adapter_heads, **dd)
            for _ in range(depth)])
        # prompt i >= 1 normalises the frame tokens with norm i - 1, every prompt the landmark tokens with norm 0
        # (the official model's last prompt norm is never used: not built)
        self.prompt_norms = nn.ModuleList([_norm_layer(embed_dim, **dd) for _ in range(max(depth - 1, 1))])
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device='cpu')]
        self.blocks = nn.Sequential(*[
            FrameBlock(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                  attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=_norm_layer, **dd)
            for i in range(depth)])
        self.feature_info = [
            dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=patch_size, temporal_reduction=1)
            for i in range(depth)]
        self.ln_post = _norm_layer(embed_dim, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """The official init (truncated-normal linears and embeddings, Xavier prompt projections, zero adapter
        outputs, unit norms); the landmark network's stand-in init until its weights are loaded."""
        self.landmark.init_weights()
        self.patch_embed.proj.reset_parameters()
        for param in (self.cls_token, self.pos_embed, self.temporal_embed):
            trunc_normal_(param, std=.02)
        for name, module in self.named_modules():
            if name.startswith('landmark.'):
                continue
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for prompt in self.prompts:
            for linear in (prompt.frame_proj, prompt.landmark_proj, prompt.out_proj):
                nn.init.xavier_uniform_(linear.weight)
            for adapter in (prompt.temporal_adapter, prompt.spatial_adapter):
                nn.init.zeros_(adapter.fc2.weight)
            nn.init.constant_(prompt.fovea_smooth, 10.)

    @staticmethod
    def sizes_of_weights(weights: Dict[str, Any]) -> Dict[str, Any]:
        """The constructor sizes a state dict of this model (or an official file) fixes: frames (the temporal
        embedding) and patch size."""
        sizes = {}
        temporal = weights.get('temporal_embed', weights.get('temporal_embedding'))
        if temporal is not None:
            sizes['num_frames'] = temporal.shape[1]
        patch = weights.get('patch_embed.proj.weight')
        if patch is not None:
            sizes['patch_size'] = patch.shape[2]
        return sizes

    def architecture_args(self) -> Dict[str, Any]:
        """Constructor arguments that define the architecture (recorded in exports)."""
        return dict(
            img_size=list(self.img_size), num_frames=self.num_frames, patch_size=self.patch_embed.patch_size[0],
            embed_dim=self.embed_dim, depth=len(self.blocks), num_heads=self.blocks[0].attn.num_heads,
            mlp_ratio=self.blocks[0].mlp.fc1.out_features / self.embed_dim,
            prompt_dim=self.prompts[0].frame_proj.out_features,
            adapter_ratio=self.prompts[0].temporal_adapter.fc1.out_features / self.embed_dim,
            adapter_heads=self.prompts[0].temporal_adapter.attn.num_heads,
            global_pool=self.global_pool, input_layout=self.input_layout)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {'cls_token', 'temporal_embed'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^cls_token|^temporal_embed|^patch_embed|^landmark',
            blocks=[(r'^(?:blocks|prompts)\.(\d+)', None), (r'^prompt_norms\.(\d+)', None),
                    (r'^ln_post', (99999,))],
        )

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """As for the other zoo models; the prompts and prompt norms of dropped blocks go too."""
        take_indices = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        self.prompts = self.prompts[:len(self.blocks)]
        self.prompt_norms = self.prompt_norms[:max(len(self.blocks) - 1, 1)]
        return take_indices

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError (TypeError for a dtype) naming the problem and the fix when ``x`` is not a valid clip."""
        check_clip(
            x, self.in_chans, self.input_layout, self.num_frames, self.img_size, False,
            self.patch_embed.proj.weight.dtype, model_name='S2D',
            value_range='ImageNet mean / std normalised RGB values')

    def _prompted(self, i: int, x: torch.Tensor, landmarks: torch.Tensor, prefix: int = 1,
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Block ``i``'s prompt added to the patch tokens of ``x`` (after ``prefix`` class tokens); the next
        landmark tokens."""
        norm = self.prompt_norms[max(i - 1, 0)]
        prompt, adapted = self.prompts[i](norm(x[:, :, prefix:]), self.prompt_norms[0](landmarks))
        return torch.cat((x[:, :, :prefix], x[:, :, prefix:] + adapted + prompt), dim=2), prompt

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Clip to the first block's input ``(B, T, 1 + N, C)`` (first prompt, positions, frames) and the first
        prompt, the landmark tokens of the next block ``(B, T, N, C)``."""
        self.check_input(x)
        layout = 'b c t h w' if self.input_layout == 'BCTHW' else 'b t c h w'
        frames = rearrange(x, f'{layout} -> (b t) c h w')
        small = F.interpolate(frames, size=self.landmark_size, mode='bilinear', align_corners=True)
        to_clips = '(b t) c h w -> b t (h w) c'
        landmarks = self.landmark_embed(rearrange(self.landmark(small).detach(), to_clips, t=self.num_frames))
        patches = rearrange(self.patch_embed(frames), '(b t) n c -> b t n c', t=self.num_frames)
        x, landmarks = self._prompted(0, patches, landmarks, prefix=0)
        cls_token = self.cls_token.expand(x.shape[0], x.shape[1], -1, -1)
        x = torch.cat((cls_token, x), dim=2) + self.pos_embed.unsqueeze(1) + self.temporal_embed.unsqueeze(2)
        return self.pos_drop(x), landmarks

    def _run(
            self,
            x: torch.Tensor,
            landmarks: torch.Tensor,
            blocks: int,
            take_indices: Sequence[int] = (),
            take: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """The first ``blocks`` blocks, each after its prompt (checkpointed if enabled); the last output and
        ``take(output)`` of every block in ``take_indices``."""
        intermediates = []
        for i in range(blocks):
            if i > 0:
                x, landmarks = self._prompted(i, x, landmarks)
            if self.grad_checkpointing:
                x = torch.utils.checkpoint.checkpoint(self.blocks[i], x, use_reentrant=False)
            else:
                x = self.blocks[i](x)
            if i in take_indices:
                intermediates.append(take(x))
        return x, intermediates

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame tokens ``(B, T, 1 + N, C)`` as ``(B, T + T*N, C)``: the T class tokens, then the patch tokens
        in (t, h, w) order."""
        return torch.cat((x[:, :, 0], x[:, :, 1:].flatten(1, 2)), dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, T + T*H'*W', C)`` after ``ln_post``: the frames' class tokens, then the patch tokens."""
        x, _ = self._run(*self._embed(x), len(self.blocks))
        return self._tokens(self.ln_post(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool ('token': mean of the frames' class tokens, the I3D head; 'avg': mean of the patch tokens), dropout,
        classify; ``pre_logits`` stops before the classifier."""
        if self.global_pool == 'token':
            x = x[:, :self.num_prefix_tokens].mean(dim=1)
        elif self.global_pool == 'avg':
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
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
        """Block outputs of the patch tokens as ``(B, C, T, H', W')`` maps ('NCTHW') or ``(B, T*H'*W', C)``
        tokens ('NLC'); class tokens are left out. Arguments as for ``LogoFormer.forward_intermediates``."""
        output_fmt = resolve_output_fmt(output_fmt)
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)

        def take(x: torch.Tensor) -> torch.Tensor:
            y = self.ln_post(x) if norm else x
            grid = rearrange(y[:, :, 1:], 'b t (h w) c -> b t h w c', h=self.grid_size[1])
            return grid_as(grid, output_fmt).contiguous()

        blocks = max_index + 1 if stop_early else len(self.blocks)
        x, intermediates = self._run(*self._embed(x), blocks, take_indices, take)
        if intermediates_only:
            return intermediates
        return self._tokens(self.ln_post(x)), intermediates


# official key (model_finetuning.py's VisionTransformer) -> ours; the rules apply in order, the first match wins
_OFFICIAL_KEY_RULES = (
    (r'^temporal_embedding$', 'temporal_embed'),
    (r'^patch_embed_prompt\.proj\.', 'landmark_embed.'),
    (r'^prompt_blocks\.(\d+)\.conv0_0\.', r'prompts.\1.frame_proj.'),
    (r'^prompt_blocks\.(\d+)\.conv0_1\.', r'prompts.\1.landmark_proj.'),
    (r'^prompt_blocks\.(\d+)\.conv1x1\.', r'prompts.\1.out_proj.'),
    (r'^prompt_blocks\.(\d+)\.fovea\.smooth$', r'prompts.\1.fovea_smooth'),
    (r'^prompt_blocks\.(\d+)\.TMA\.T_Adapter\.D_', r'prompts.\1.temporal_adapter.'),
    (r'^prompt_blocks\.(\d+)\.TMA\.T_Adapter\.attn\.', r'prompts.\1.temporal_adapter.attn.'),
    (r'^prompt_blocks\.(\d+)\.TMA\.S_Adapter\.D_', r'prompts.\1.spatial_adapter.'),
    (r'^prompt_blocks\.(\d+)\.TMA\.norm\.', r'prompts.\1.adapter_norm.'),
    (r'^head\.fc_cls\.', 'head.'),
    (r'^norm\.', 'ln_post.'),  # the AffectNet pre-trained file's name (the official loader renames it too)
)
_LANDMARK = 'landmark.'


def _official_to_ours(key: str, value: torch.Tensor) -> Tuple[str, torch.Tensor]:
    for pattern, replacement in _OFFICIAL_KEY_RULES:
        key, found = re.subn(pattern, replacement, key)
        if found:
            break
    if value.ndim == 4 and value.shape[-2:] == (1, 1) and not key.startswith(('patch_embed.', _LANDMARK)):
        value = value.flatten(1)  # a 1x1 convolution on maps is a linear layer on tokens
    return key, value


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: S2D) -> Dict[str, torch.Tensor]:
    """S2D weights as ``model``'s state dict: the authors' fine-tuned file with their landmark file merged in under
    ``landmark.`` (``pretrained_cfg_overlay=dict(file=..., landmark_file=...)``, the commands'
    ``--landmark-checkpoint``), or this model's own state dict (an export holds both networks).

    The fine-tuned file (``utils.save_model``) is ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``; its
    ``model`` entry is the ViT with its prompts and head (the landmark network is not in it). The landmark file is
    ``{'state_dict'}`` of the whole MobileFaceNet; the layers after ``conv_4`` are not used and are dropped. The
    official model's unused last prompt norm is dropped; the temporal and position embeddings are resampled to the
    model's frames and patch grid. Anything that does not fit raises :class:`CheckpointMismatchError`.
    """
    state_dict = unwrap_checkpoint(state_dict)
    target = model.state_dict()
    if not any(k.startswith(_LANDMARK) for k in state_dict):
        raise CheckpointMismatchError(
            f'the weights hold no landmark network: pass the authors\' landmark file as well (Python: '
            f'pretrained_cfg_overlay=dict(file=..., landmark_file=...); commands: --landmark-checkpoint), '
            f'{LANDMARK_FILE}.')
    out = {}
    unused_norm = f'prompt_norms.{len(model.prompt_norms)}.'
    for key, value in state_dict.items():
        if key not in target:
            key, value = _official_to_ours(key, value)
        if key.startswith(_LANDMARK) and key not in target and key.split('.')[1] in (
                'conv_45', 'conv_5', 'conv_6_sep', 'output_layer'):
            continue  # the landmark regressor after conv_4: the official model computes it and discards it
        if key.startswith(unused_norm) and key not in target:
            continue
        if key == 'temporal_embed' and value.shape[1] != model.num_frames:
            value = resample_temporal_pos_embed(value, model.num_frames)
        elif key == 'pos_embed' and value.shape != target['pos_embed'].shape:
            value = resample_abs_pos_embed(value, model.grid_size[1:], num_prefix_tokens=1)
        out[key] = value
    check_same_architecture(
        out, target, 'S2D', hint='embed_dim, depth, num_heads, patch_size, prompt_dim, adapter_ratio, adapter_heads')
    check_weights(out, 'the weights', target)
    return out


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'num_classes': 7,
        'num_frames': 16,
        'input_size': (3, 224, 224),
        'fixed_input_size': True,
        'pool_size': (16, 14, 14),  # the unpooled token grid (T', H', W') of a 16 x 224 x 224 clip
        'crop_pct': 1.0,
        'crop_mode': 'squash',  # the official test transform resizes the whole frame to 224 x 224: no crop
        'interpolation': 'bilinear',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj',
        'classifier': 'head',
        'label_names': DFER_LABELS,
        'license': 'apache-2.0',
        'paper_ids': 'arXiv:2312.05447',
        'paper_name': 'From Static to Dynamic: Adapting Landmark-Aware Image Models for Facial Expression '
                      'Recognition in Videos',
        **kwargs,
    }


_HUB = 'https://huggingface.co/cyinen/S2D'
_README = ('the README of github.com/MSA-LMC/S2D (commit e1b5e5d), "Reported Results and Fine-tuned Weights", '
           'the "w/o oversampling" columns')
# tag -> (dataset, fold, UAR, WAR) without oversampling, and (UAR, WAR) with it (the README's two column pairs)
_RELEASED = {
    'dfew_fold1': ('DFEW', 1, (61.56, 76.16), (64.80, 75.35)),
    'dfew_fold2': ('DFEW', 2, (59.93, 73.99), (62.54, 72.53)),
    'dfew_fold3': ('DFEW', 3, (61.33, 76.41), (66.47, 75.87)),
    'dfew_fold4': ('DFEW', 4, (62.75, 76.31), (66.03, 74.48)),
    'dfew_fold5': ('DFEW', 5, (63.51, 77.27), (67.43, 76.80)),
    'ferv39k': ('FERV39K', None, (41.28, 52.56), (43.97, 46.21)),
    'mafw_fold1': ('MAFW', 1, (32.78, 46.76), (36.16, 44.21)),
    'mafw_fold2': ('MAFW', 2, (40.43, 55.96), (41.94, 51.22)),
    'mafw_fold3': ('MAFW', 3, (47.01, 62.08), (48.08, 61.48)),
    'mafw_fold4': ('MAFW', 4, (45.66, 62.61), (47.67, 60.64)),
    'mafw_fold5': ('MAFW', 5, (43.45, 59.42), (43.16, 58.55)),
}
_LABELS = {
    'DFEW': dict(num_classes=7, label_names=DFER_LABELS),
    'FERV39K': dict(num_classes=7, label_names=S2D_FERV39K_LABELS),
    'MAFW': dict(num_classes=11, label_names=S2D_MAFW_LABELS),
}


def _released_cfgs() -> Dict[str, Any]:
    cfgs = {}
    for tag, (dataset, fold, (uar, war), (os_uar, os_war)) in _RELEASED.items():
        split = f'fold {fold}' if fold else 'all scenes'
        source = (f'{_README}; with oversampling the README reports UAR {os_uar:.2f} / WAR {os_war:.2f}, and which '
                  f'of the two trainings the released file is, is not stated')
        description = (
            f'the S2D {dataset} {split} fine-tuned file of the Hugging Face repo cyinen/S2D (also on Baidu Drive, '
            f'linked from the README of github.com/MSA-LMC/S2D), as utils.save_model wrote it ({{\'model\', '
            f'\'optimizer\', \'epoch\', \'scaler\', \'args\'}}), together with the landmark file, {LANDMARK_FILE}, '
            f'passed as landmark_file=. Official test input: 16 frames at sampling rate 1, every frame resized to '
            f'224 x 224 (bilinear), ImageNet mean / std; 2 temporal x 2 spatial views (the cfg\'s test_protocol).')
        cfgs[f's2d.{tag}'] = released_cfg(
            f's2d.{tag}', _cfg(**_LABELS[dataset], test_protocol=f's2d_{dataset.lower()}'), _HUB, description,
            ReportedResult(dataset, fold, uar, war, source))
    return clip_default_cfgs(cfgs)


default_cfgs = _released_cfgs()


def _create_s2d(variant: str, pretrained: bool = False, **kwargs) -> S2D:
    build_kwargs = dict(
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=kwargs.get('depth', 12), feature_cls='getter'),  # all blocks
    )
    model = build_clip_model(S2D, variant, pretrained, **build_kwargs, **kwargs)
    if kwargs.get('features_only'):
        label_feature_maps(model, S2D.block_output_fmt)
    return model


@register_model
def s2d(pretrained: bool = False, **kwargs) -> S2D:
    """S2D as released: ViT-B/16 per frame with landmark prompts and adapters, a frozen MobileFaceNet; 16 x 224."""
    return _create_s2d('s2d', pretrained=pretrained, **kwargs)
