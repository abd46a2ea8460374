"""A synthetic DFER dataset in the official folder layout, generated deterministically: the data the official
evaluations were run on to record ``tests/data/protocols_official.json``.

Clips of ``FRAME_COUNTS`` frames at each of ``FRAME_SIZES`` (width x height), numbered ``00001 .. 00018`` under
``<root>/Clip/jpg_256/`` (MAE-DFER's lists) with frames ``00001.jpg ...`` (the zero-padded names every official
loader sorts by name); clip ``k`` (from 0) has label ``k % 7``, so every DFEW class is present. Pixels are integer
arithmetic on the clip, frame and position (no RNG), saved by Pillow as baseline JPEG at quality 90 with 4:2:0
chroma subsampling. :func:`decoded_checksums` hashes the frames as Pillow decodes them: the recording holds them,
so a machine whose libjpeg encodes or decodes these files differently fails with that said, not with a pixel diff.
"""
import hashlib
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

__all__ = ['FRAME_COUNTS', 'FRAME_SIZES', 'AUTHORS_ROOT', 'Clip', 'clips', 'write_dataset', 'decoded_checksums',
           'write_mae_dfer_list', 'write_former_dfer_list']

FRAME_COUNTS = (1, 5, 9, 10, 16, 17, 33, 64, 150)
FRAME_SIZES = ((180, 140), (256, 256))  # (width, height)
AUTHORS_ROOT = '/mnt/data1/brain/AC/Dataset/DFEW/Clip/jpg_256'  # the prefix of MAE-DFER's DFEW split files
Clip = Tuple[str, int, Tuple[int, int], int]  # (name, frames, (width, height), label)


def clips() -> List[Clip]:
    """Every clip of the dataset, in list order."""
    specs = [(n, size) for size in FRAME_SIZES for n in FRAME_COUNTS]
    return [(f'{k + 1:05d}', n, size, k % 7) for k, (n, size) in enumerate(specs)]


def _frame(clip: int, t: int, width: int, height: int) -> np.ndarray:
    """A frame with edges, gradients and motion: enough detail for a resize to be a real test."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    r = (x * (3 + clip) + y * 2 + t * 7) % 256
    g = ((x // 8 + y // 8 + t + clip) % 2) * 180 + (y * 5 + t) % 60
    cx, cy = (17 * t + 31 * clip) % width, (11 * t + 5 * clip) % height
    b = np.where((x - cx) ** 2 + (y - cy) ** 2 < (height // 4) ** 2, 230, (x * y // 64 + clip * 13) % 200)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def write_dataset(root) -> Path:
    """Write the dataset under ``root/Clip/jpg_256``; returns that folder."""
    base = Path(root) / 'Clip' / 'jpg_256'
    for k, (name, frames, (width, height), _) in enumerate(clips()):
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            Image.fromarray(_frame(k, t, width, height)).save(
                folder / f'{t + 1:05d}.jpg', format='JPEG', quality=90, subsampling=2, optimize=False,
                progressive=False)
    return base


def decoded_checksums(base) -> Dict[str, str]:
    """sha256 of every clip's frames as Pillow decodes them (``Image.open(...).convert('RGB')``), by clip name."""
    out = {}
    for name, frames, _, _ in clips():
        digest = hashlib.sha256()
        for t in range(frames):
            with Image.open(Path(base) / name / f'{t + 1:05d}.jpg') as image:
                digest.update(np.asarray(image.convert('RGB')).tobytes())
        out[name] = digest.hexdigest()
    return out


def write_mae_dfer_list(path, prefix: str) -> Path:
    """MAE-DFER's split-file form: ``<prefix>/<clip> <label>`` per line (every frame of the folder)."""
    Path(path).write_text(''.join(f'{os.path.join(prefix, name)} {label}\n' for name, _, _, label in clips()))
    return Path(path)


def write_former_dfer_list(path, prefix: str) -> Path:
    """Former-DFER's / DFER-CLIP's ``annotation/*.txt`` form: ``<prefix>/<clip> <num_frames> <label>`` per line."""
    Path(path).write_text(''.join(
        f'{os.path.join(prefix, name)} {frames} {label}\n' for name, frames, _, label in clips()))
    return Path(path)
