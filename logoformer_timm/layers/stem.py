"""The per-frame stem of LOGO-Former: timm's ResNet-18 ``conv1 .. layer3`` (stride 16, 256 channels), run in
chunks of frames at eager inference. Reading ResNet-18 weights from a file or timm name is in ``weights/pretrained.py``.
"""
import os
from typing import Mapping, Optional, Union

import torch
import torch.nn as nn
from timm.models.resnet import BasicBlock, ResNet

from .attention import chunks_on, eager_inference

__all__ = ['FrameStem', 'STEM_STRIDE', 'STEM_CHANS']

STEM_STRIDE = 16
STEM_CHANS = 256
_STEM_PREFIXES = ('conv1.', 'bn1.', 'layer1.', 'layer2.', 'layer3.')


class FrameStem(nn.Module):
    """timm's ResNet-18 ``conv1 .. layer3`` applied to each frame: ``(N, C, H, W) -> (N, 256, H/16, W/16)``.

    :meth:`forward_clip` runs it on the frames of clips ``(B, T, C, H, W)``. At eager inference (eval mode, no
    autograd, not compiling or tracing: :func:`~logoformer_timm.layers.eager_inference`) it runs a clip's frames
    in chunks of at most ``chunk_pixels`` input pixels per chunk (at least one frame), so that the full-resolution
    ``conv1`` / ``bn1`` maps exist for one chunk at a time: at 32x224x224 they would otherwise be 2 x 103 MB, more
    than the whole transformer needs. Every frame is computed on its own (batch norm uses its running statistics),
    so the output is that of the unchunked stem. ``chunk_pixels = None`` turns chunking off, and only CPU tensors
    are chunked (:func:`~logoformer_timm.layers.attention.chunks_on`). Training, autograd, torch.compile, traced
    graphs (FX, torch.export) and a stem with a forward hook or pre-hook on it or inside it (so that the hook sees
    every frame) run all frames at once.
    """

    chunk_pixels: Optional[int] = 4 * 224 * 224  # 4 frames at 224x224, 16 at 112x112 (one chunk per such clip)

    def __init__(self, in_chans: int = 3, device=None, dtype=None):
        super().__init__()
        resnet = ResNet(BasicBlock, (2, 2, 2, 2), in_chans=in_chans, num_classes=0, device=device, dtype=dtype)
        # keep timm's module names so that ResNet-18 state dicts load as they are
        self.conv1, self.bn1, self.act1, self.maxpool = resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3

    def init_weights(self, zero_init_last: bool = True) -> None:
        """timm's ResNet init (kaiming-normal convs, the last BatchNorm of each residual branch zeroed), with every
        BatchNorm's affine parameters and running statistics reset: every tensor, so a meta-device build can be
        initialised after ``to_empty()``."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # weight 1, bias 0, running mean 0 / var 1, num_batches_tracked 0
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, 'zero_init_last'):
                    m.zero_init_last()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            # inference: channels-last frames, so every map is channels-last: the same outputs, and on a CPU
            # oneDNN's convolutions run faster and max pooling many times faster (a tenth of a bf16 pass in NCHW at
            # 16x112); the maps then reach token_embed as contiguous (tokens, C) rows. Under autograd the weights'
            # gradients would come out channels-last, unlike the weights, and DDP would copy them into its buckets.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_clip(self, x: torch.Tensor) -> torch.Tensor:
        """Frames of clips ``(B, T, C, H, W)`` (any strides) to maps ``(B, T, 256, H/16, W/16)``."""
        if (self.training or self.chunk_pixels is None or not eager_inference(self)  # one piece while hooked
                or not chunks_on(x.device)):
            # 'b t c h w -> (b t) c h w' and back
            return self(x.flatten(0, 1)).unflatten(0, (x.shape[0], x.shape[1]))
        frames = max(1, self.chunk_pixels // (x.shape[-2] * x.shape[-1]))
        # each chunk is a view of one clip's frames: no copy of the whole clip in (b t) order
        chunks = [self(clip[start:start + frames]) for clip in x.unbind(0) for start in range(0, x.shape[1], frames)]
        return torch.cat(chunks).unflatten(0, (x.shape[0], x.shape[1]))

    def load_resnet_weights(self, state_dict: Mapping[str, torch.Tensor], source: Union[str, os.PathLike]) -> None:
        """Load the ``conv1 .. layer3`` weights of a ResNet-18 state dict read from ``source`` (``stem_weights``)."""
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
