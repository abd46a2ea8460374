"""Frame folders: which files of a clip's folder are its frames, in which order, and their pixels as 8-bit RGB.

A frame folder holds numbered images (``00001.jpg``, ``frame_2.png``, ...), ordered by the last number in the
name; hidden files (``.x.jpg``, macOS's ``._00001.jpg``), folders and anything but image files are not frames, and
two files with one number are refused. A frame of any PIL mode becomes the pixels of its 8-bit RGB twin or is
refused in one line: see :func:`read_frame`.
"""
import os
import re
import warnings
from typing import Any, List

import numpy as np
import torch
from PIL import Image

from ..errors import UserError

__all__ = ['IMAGE_EXTENSIONS', 'ClipLoadError', 'list_frames', 'read_frame', 'check_clip_frames']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
_NUMBER = re.compile(r'(\d+)(?!.*\d)')
_SIXTEEN_BIT = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')  # 16-bit greyscale PNG (older Pillow: 'I')


class ClipLoadError(UserError, RuntimeError):
    """A clip whose frames cannot be read."""


def list_frames(frame_dir: str) -> List[str]:
    """Image files of a frame folder, ordered by the last number in their names: hidden files (``.x.jpg``, macOS's
    ``._00001.jpg``) and folders are not frames; two files of one number (``00001.jpg``, ``00001.png``) are refused."""
    with os.scandir(frame_dir) as entries:
        names = [e.name for e in entries
                 if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith('.') and e.is_file()]
    unnumbered = [n for n in names if not _NUMBER.search(os.path.splitext(n)[0])]
    if unnumbered:
        raise ClipLoadError(f'{frame_dir}: frame files must be numbered, found {unnumbered[:3]}.')
    numbered = sorted((int(_NUMBER.search(os.path.splitext(n)[0]).group(1)), n) for n in names)
    repeated = [(a, b) for (number, a), (other, b) in zip(numbered, numbered[1:]) if number == other]
    if repeated:
        pairs = ', '.join(' and '.join(pair) for pair in repeated[:3])
        more = f', ... ({len(repeated)} in all)' if len(repeated) > 3 else ''
        raise ClipLoadError(f'{frame_dir} holds two files for one frame number ({pairs}{more}): which is the frame is '
                            f'ambiguous; keep one file per frame number.')
    return [os.path.join(frame_dir, n) for _, n in numbered]


def _open_frame(path: str) -> Image.Image:
    """``Image.open`` (the header only) that refuses what cannot be a video frame: an image over PIL's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) or of pixels with no 8-bit scale (float, mode F)."""
    with warnings.catch_warnings():
        warnings.simplefilter('error', Image.DecompressionBombWarning)  # also the lower limit PIL only warns at
        try:
            image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ClipLoadError(f'frame {path} is not a video frame: {e}') from None
        except (OSError, ValueError) as e:
            raise ClipLoadError(f'cannot read image {path}: {e}') from None
    if image.mode == 'F':
        image.close()
        raise ClipLoadError(f'frame {path} holds 32-bit float pixels (PIL mode F), which have no 8-bit scale; save '
                            f'the frames as 8-bit (or 16-bit) images.')
    return image


def read_frame(path: str) -> torch.Tensor:
    """uint8 RGB pixels ``(3, H, W)`` of a frame file, those of its 8-bit RGB twin whatever its PIL mode: 16-bit
    greyscale (``I;16``, ``I``) as its value / 257 (rounded), palette, greyscale, bilevel, CMYK and alpha modes by
    PIL's conversion to RGB (alpha dropped); a ``ClipLoadError`` naming the frame for anything else."""
    with _open_frame(path) as image:
        try:
            if image.mode in _SIXTEEN_BIT:
                values = np.asarray(image, dtype=np.int64)
                if values.size and (values.min() < 0 or values.max() > 65535):
                    raise ValueError(f'PIL mode {image.mode} values outside 0-65535, not a 16-bit image')
                grey = torch.from_numpy(((2 * values + 257) // 514).astype(np.uint8))  # round(value / 257)
                return grey.expand(3, *grey.shape).contiguous()
            return torch.from_numpy(np.array(image.convert('RGB'))).permute(2, 0, 1)
        except (OSError, ValueError) as e:
            raise ClipLoadError(f'cannot read image {path}: {e}') from e


def check_clip_frames(record: Any) -> None:
    """Open every frame of a clip (headers only, no pixels decoded): a file that is no image, an image over
    PIL's decompression-bomb limit, float pixels or frames of different sizes raise a ``ClipLoadError``; a video
    file is probed."""
    if not os.path.isdir(record.path):
        from ..video.decode import VideoError, probe_video
        try:
            probe_video(record.path)
        except (ImportError, VideoError) as e:
            raise ClipLoadError(f'{record.source}: {e}') from None
        return
    sizes = {}
    for path in list_frames(record.path):
        with _open_frame(path) as image:
            sizes.setdefault(image.size, path)
    if len(sizes) > 1:
        raise ClipLoadError(f'{record.source}: frames of {record.path} differ in size: '
                            f'{", ".join(f"{w}x{h} ({os.path.basename(p)})" for (w, h), p in sizes.items())}.')
