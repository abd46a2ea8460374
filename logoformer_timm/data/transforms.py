"""Clip transforms of the DFER protocol, built from torchvision's v2 transforms on video tensors.

A v2 transform given a ``tv_tensors.Video`` of shape ``(T, C, H, W)`` draws its random parameters once and
applies them to every frame, so the random-resized crop and the flip are the same for the whole clip.
"""
from typing import Optional, Sequence, Tuple

import torch
from einops import rearrange
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ['ClipTransform']


class ClipTransform:
    """uint8 frames ``(T, C, H, W)`` -> float clip ``(C, T, H, W)`` in [0, 1] (then optional mean/std).

    train: one random-resized crop (area ``scale``, aspect ``ratio``) and one horizontal flip (probability
    ``hflip``) for the whole clip, bilinear resize to ``img_size``. test: bilinear resize only.
    """

    def __init__(
            self,
            img_size: Tuple[int, int] = (112, 112),
            train: bool = False,
            scale: Tuple[float, float] = (0.08, 1.0),
            ratio: Tuple[float, float] = (3 / 4, 4 / 3),
            hflip: float = 0.5,
            mean: Optional[Sequence[float]] = None,
            std: Optional[Sequence[float]] = None,
    ):
        self.img_size = tuple(img_size)
        self.train = train
        bilinear = v2.InterpolationMode.BILINEAR
        if train:
            steps = [v2.RandomResizedCrop(self.img_size, scale=scale, ratio=ratio, interpolation=bilinear, antialias=True)]
            if hflip > 0:
                steps.append(v2.RandomHorizontalFlip(p=hflip))
        else:
            steps = [v2.Resize(self.img_size, interpolation=bilinear, antialias=True)]
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if mean is not None and std is not None and (any(m != 0 for m in mean) or any(s != 1 for s in std)):
            steps.append(v2.Normalize(mean=list(mean), std=list(std)))
        self.transform = v2.Compose(steps)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.dtype != torch.uint8:
            raise ValueError(f'ClipTransform expects uint8 frames (T, C, H, W), got {frames.dtype} {tuple(frames.shape)}.')
        clip = self.transform(tv_tensors.Video(frames)).as_subclass(torch.Tensor)
        return rearrange(clip, 't c h w -> c t h w').contiguous()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(train={self.train}, {self.transform})'
