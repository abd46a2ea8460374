"""Clip transforms of the DFER protocol, built from torchvision's v2 transforms on video tensors.

A v2 transform given a ``tv_tensors.Video`` of shape ``(T, C, H, W)`` draws its random parameters once and
applies them to every frame, so the random-resized crop and the flip are the same for the whole clip.
The keyword arguments mirror timm's ``create_transform``, so ``ClipTransform(**resolve_video_data_config(model))``
builds the clip a model expects, as ``create_transform(**resolve_data_config({}, model=model))`` does for images.
Given a ``test_protocol`` (:class:`~logoformer_timm.data.TestProtocol`), the test transform is the protocol's: its
resize implementation (PIL's, as the zoo's authors' loaders, or torchvision's on tensors), scaling and mean/std.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from .protocol import TestProtocol, get_test_protocol

__all__ = ['ClipTransform', 'CROP_MODES']

CROP_MODES = ('squash', 'center')
_INTERPOLATIONS = {
    'bilinear': v2.InterpolationMode.BILINEAR, 'bicubic': v2.InterpolationMode.BICUBIC,
    'nearest': v2.InterpolationMode.NEAREST}
_LAYOUTS = {'BCTHW': 't c h w -> c t h w', 'BTCHW': 't c h w -> t c h w'}
_PIL_INTERPOLATIONS = {'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC, 'nearest': Image.NEAREST}
Frames = Union[torch.Tensor, Sequence[Image.Image]]


class _ResizeShorterSide:
    """Resize so that the clip covers ``size`` with its aspect ratio kept (timm's ``ResizeKeepRatio``, longest=0)."""

    def __init__(self, size: Tuple[int, int], interpolation: v2.InterpolationMode):
        self.size = size
        self.interpolation = interpolation

    def __call__(self, clip: tv_tensors.Video) -> tv_tensors.Video:
        height, width = clip.shape[-2:]
        ratio = min(height / self.size[0], width / self.size[1])
        new_size = [round(height / ratio), round(width / ratio)]
        return v2.functional.resize(clip, new_size, interpolation=self.interpolation, antialias=True)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, interpolation={self.interpolation.value})'


class ClipTransform:
    """uint8 frames ``(T, C, H, W)`` -> float clip in the model's layout, values in [0, 1] (then optional mean/std).

    train: one random-resized crop (area ``scale``, aspect ``ratio``) and one horizontal flip (probability
    ``hflip``) for the whole clip, resized to the input size. test: timm's image eval transform on every frame:
    ``crop_mode='squash'`` resizes both sides to ``size / crop_pct`` then centre-crops ``size``; ``'center'``
    resizes the shorter side to ``size / crop_pct`` (aspect kept) then centre-crops. The DFER protocol's test
    transform (resize only) is the default ``crop_pct=1.0, crop_mode='squash'``.
    """

    def __init__(
            self,
            input_size: Union[int, Sequence[int]] = (3, 16, 112, 112),
            train: bool = False,
            scale: Tuple[float, float] = (0.08, 1.0),
            ratio: Tuple[float, float] = (3 / 4, 4 / 3),
            hflip: float = 0.5,
            interpolation: str = 'bilinear',
            mean: Optional[Sequence[float]] = None,
            std: Optional[Sequence[float]] = None,
            crop_pct: Optional[float] = 1.0,
            crop_mode: Optional[str] = 'squash',
            input_layout: str = 'BCTHW',
            test_protocol: Union[TestProtocol, str, dict, None] = None,
    ):
        """
        Args:
            input_size: Output frame size: an int, ``(H, W)`` or the model's ``(C, T, H, W)`` (the last two are used).
            train: Random crop and flip (training) instead of the deterministic test transform.
            scale, ratio: Area and aspect ranges of the training random-resized crop.
            hflip: Probability of flipping a training clip.
            interpolation: 'bilinear', 'bicubic' or 'nearest'.
            mean, std: Per-channel normalisation after scaling to [0, 1] (none when omitted).
            crop_pct: Test transform: fraction of the resized frame kept by the centre crop (None = 1.0).
            crop_mode: Test transform: 'squash' or 'center' (None = 'squash').
            input_layout: Output layout of the model the clip is for: 'BCTHW' -> ``(C, T, H, W)``,
                'BTCHW' -> ``(T, C, H, W)``.
            test_protocol: The test transform of this protocol (its size, resize, scaling and mean/std) instead
                of the arguments above; ignored when ``train``.
        """
        self.protocol = None if train else get_test_protocol(test_protocol)
        if self.protocol is not None:
            input_size, interpolation = self.protocol.size, self.protocol.interpolation
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)[-2:]
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(f'input_size must be an int, (H, W) or (C, T, H, W) of positive ints, got {input_size!r}.')
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(f'interpolation must be one of {tuple(_INTERPOLATIONS)}, got {interpolation!r}.')
        if input_layout not in _LAYOUTS:
            raise ValueError(f'input_layout must be one of {tuple(_LAYOUTS)}, got {input_layout!r}.')
        crop_pct = 1.0 if crop_pct is None else crop_pct
        crop_mode = 'squash' if crop_mode is None else crop_mode
        if not crop_pct > 0:
            raise ValueError(f'crop_pct must be > 0 (1.0 keeps the whole frame), got {crop_pct!r}.')
        if crop_mode not in CROP_MODES:
            hint = " ('border' pads instead of cropping and is not supported for clips)" if crop_mode == 'border' else ''
            raise ValueError(f'crop_mode must be one of {CROP_MODES}, got {crop_mode!r}{hint}.')
        self.img_size = size
        self.train = train
        self.input_layout = input_layout
        mode = _INTERPOLATIONS[interpolation]
        if train:
            steps = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, interpolation=mode, antialias=True)]
            if hflip > 0:
                steps.append(v2.RandomHorizontalFlip(p=hflip))
        else:
            scale_size = tuple(math.floor(s / crop_pct) for s in size)
            if crop_mode == 'squash':
                steps = [v2.Resize(scale_size, interpolation=mode, antialias=True)]
            elif scale_size[0] == scale_size[1]:  # shorter side, torchvision's rule (as timm does for square sizes)
                steps = [v2.Resize(scale_size[0], interpolation=mode, antialias=True)]
            else:
                steps = [_ResizeShorterSide(scale_size, mode)]
            if scale_size != size or crop_mode == 'center':
                steps.append(v2.CenterCrop(size))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if mean is not None and std is not None and (any(m != 0 for m in mean) or any(s != 1 for s in std)):
            steps.append(v2.Normalize(mean=list(mean), std=list(std)))
        self.transform = v2.Compose(steps)
        if self.protocol is not None:  # the protocol's resize only; scaling and mean/std as its authors' code
            self.transform = v2.Resize(size, interpolation=mode, antialias=True)

    def __call__(self, frames: Frames) -> torch.Tensor:
        """Transform uint8 frames ``(T, C, H, W)`` (or, with a test protocol, RGB PIL images) into one clip in
        ``input_layout``."""
        if self.protocol is not None:
            return rearrange(self._protocol_clip(frames), _LAYOUTS[self.input_layout]).contiguous()
        if not torch.is_tensor(frames) or frames.ndim != 4 or frames.dtype != torch.uint8:
            got = f'{frames.dtype} {tuple(frames.shape)}' if torch.is_tensor(frames) else type(frames).__name__
            raise ValueError(f'ClipTransform expects uint8 frames (T, C, H, W), got {got}.')
        clip = self.transform(tv_tensors.Video(frames)).as_subclass(torch.Tensor)
        return rearrange(clip, _LAYOUTS[self.input_layout]).contiguous()

    def _protocol_clip(self, frames: Frames) -> torch.Tensor:
        """``(T, C, H, W)`` float32: resized by the protocol's implementation, ``/ scale``, then ``(x - mean) / std``
        (the operations, in float32, of the authors' ``ToTorchFormatTensor`` / ``ClipToTensor`` and ``Normalize``)."""
        protocol = self.protocol
        if protocol.resize == 'pil':
            images = _as_pil_images(frames)
            height, width = protocol.size
            resized = [np.asarray(image.resize((width, height), _PIL_INTERPOLATIONS[protocol.interpolation]))
                       for image in images]
            clip = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)
        else:
            clip = self.transform(tv_tensors.Video(_as_uint8_frames(frames))).as_subclass(torch.Tensor)
        clip = clip.to(torch.float32).div(protocol.scale)
        if any(m != 0 for m in protocol.mean) or any(s != 1 for s in protocol.std):
            mean = torch.as_tensor(protocol.mean, dtype=torch.float32)[:, None, None]
            std = torch.as_tensor(protocol.std, dtype=torch.float32)[:, None, None]
            clip = clip.sub_(mean).div_(std)
        return clip

    def __repr__(self) -> str:
        what = self.protocol.name if self.protocol is not None else self.transform
        return f'{type(self).__name__}(train={self.train}, layout={self.input_layout}, {what})'


def _as_pil_images(frames: Frames) -> List[Image.Image]:
    """RGB PIL images of uint8 frames ``(T, C, H, W)`` (the same pixels), or the images themselves."""
    if torch.is_tensor(frames):
        return [Image.fromarray(frame) for frame in _as_uint8_frames(frames).permute(0, 2, 3, 1).numpy()]
    if not len(frames) or not all(isinstance(f, Image.Image) and f.mode == 'RGB' for f in frames):
        raise ValueError('ClipTransform expects uint8 frames (T, C, H, W) or a non-empty list of RGB PIL images.')
    return list(frames)


def _as_uint8_frames(frames: Frames) -> torch.Tensor:
    if not torch.is_tensor(frames):
        return torch.from_numpy(np.stack([np.asarray(f) for f in _as_pil_images(frames)])).permute(0, 3, 1, 2)
    if frames.ndim != 4 or frames.dtype != torch.uint8:
        raise ValueError(f'ClipTransform expects uint8 frames (T, C, H, W), got {frames.dtype} {tuple(frames.shape)}.')
    return frames
