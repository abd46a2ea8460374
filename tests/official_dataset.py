"""A synthetic DFER dataset in the official folder layout, generated deterministically: the data the official
evaluations were run on to record ``tests/data/protocols_official.json``.

Clips of ``FRAME_COUNTS`` frames at each of ``FRAME_SIZES`` (width x height), numbered ``00001 .. 00018`` under
``<root>/Clip/jpg_256/`` (MAE-DFER's lists) with frames ``00001.jpg ...`` (the zero-padded names every official
loader sorts by name); clip ``k`` (from 0) has label ``k % 7``, so every DFEW class is present. Pixels are integer
arithmetic on the clip, frame and position (no RNG), saved by Pillow as baseline JPEG at quality 90 with 4:2:0
chroma subsampling. :func:`decoded_checksums` hashes the frames as Pillow decodes them: the recording holds them,
so a machine whose libjpeg encodes or decodes these files differently fails with that said, not with a pixel diff.

S2D reads its own CSV split files with paths relative to a data root: :func:`write_s2d_lists` writes them for the
DFEW clips above (``video_name,label``), and :func:`write_s2d_layouts` adds a few clips in its FERV39K layout
(``<scene>/<class>/<id>/0001.jpg``, ``path,id``) and MAFW layout (``.png`` frames, ``video_name,labels``).
"""
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

__all__ = ['FRAME_COUNTS', 'FRAME_SIZES', 'AUTHORS_ROOT', 'Clip', 'clips', 'write_dataset', 'decoded_checksums',
           'write_mae_dfer_list', 'write_former_dfer_list', 'S2D_FERV39K_CLIPS', 'S2D_MAFW_CLIPS', 'write_s2d_layouts',
           'write_s2d_lists', 'folder_checksum', 'check_official_evaluation']

FRAME_COUNTS = (1, 5, 9, 10, 16, 17, 33, 64, 150)
FRAME_SIZES = ((180, 140), (256, 256))  # (width, height)
AUTHORS_ROOT = '/mnt/data1/brain/AC/Dataset/DFEW/Clip/jpg_256'  # the prefix of MAE-DFER's DFEW split files
Clip = Tuple[str, int, Tuple[int, int], int]  # (name, frames, (width, height), label)
# S2D's FERV39K (alphabetical labels) and MAFW layouts: (path relative to the data root, frames, size, label)
S2D_FERV39K_CLIPS: Tuple[Clip, ...] = (
    ('Interview/Happy/0118', 7, (120, 150), 3), ('DailyLife/Angry/0094', 23, (224, 224), 0),
    ('Social/Surprise/0005', 16, (200, 160), 6))
S2D_MAFW_CLIPS: Tuple[Clip, ...] = (('00025', 3, (224, 224), 0), ('00028', 18, (256, 200), 10))


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


def write_s2d_layouts(root) -> Tuple[Path, Path]:
    """S2D's FERV39K and MAFW layouts under ``root``: returns their data roots (``2_ClipsforFaceCrop``,
    ``frames_crop_align_224``), frames ``0001.jpg ...`` and ``00001.png ...``."""
    roots = Path(root) / '2_ClipsforFaceCrop', Path(root) / 'frames_crop_align_224'
    for base, specs, name in zip(roots, (S2D_FERV39K_CLIPS, S2D_MAFW_CLIPS), ('{:04d}.jpg', '{:05d}.png')):
        for k, (path, frames, (width, height), _) in enumerate(specs):
            folder = base / path
            folder.mkdir(parents=True, exist_ok=True)
            for t in range(frames):
                image = Image.fromarray(_frame(40 + k, t, width, height))
                if name.endswith('.jpg'):
                    image.save(folder / name.format(t + 1), format='JPEG', quality=90, subsampling=2)
                else:
                    image.save(folder / name.format(t + 1), format='PNG')
    return roots


def write_s2d_lists(folder) -> Dict[str, Path]:
    """S2D's split-file forms (CSV with a header; paths relative to the data root) of the DFEW clips of
    :func:`write_dataset` and of :func:`write_s2d_layouts`' clips: ``{'dfew', 'ferv39k', 'mafw'}`` -> file, and
    ``'dfew_eval'``, the first seven DFEW clips (one of each class; 1 to 33 frames: the model's test)."""
    specs = {'dfew': ('video_name,label', clips()), 'ferv39k': ('path,id', S2D_FERV39K_CLIPS),
             'mafw': ('video_name,labels', S2D_MAFW_CLIPS), 'dfew_eval': ('video_name,label', clips()[:7])}
    out = {}
    for dataset, (header, rows) in specs.items():
        out[dataset] = Path(folder) / f'{dataset}_test.csv'
        out[dataset].write_text(header + '\n' + ''.join(f'{name},{label}\n' for name, _, _, label in rows))
    return out


def folder_checksum(folder) -> str:
    """sha256 of a frame folder's images in name order, as Pillow decodes them (``.convert('RGB')``)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix in ('.jpg', '.png')):
        with Image.open(path) as image:
            digest.update(np.asarray(image.convert('RGB')).tobytes())
    return digest.hexdigest()


def check_official_evaluation(output, official, list_names) -> dict:
    """``logoformer-eval``'s ``OUTPUT`` against an official evaluation's record (its ``clips``' labels,
    predictions and merged probabilities, within 1e-5, and its UAR / WAR); returns the metrics."""
    metrics = json.loads((Path(output) / 'metrics.json').read_text())
    rows = [json.loads(line) for line in (Path(output) / 'predictions.jsonl').read_text().splitlines()]
    assert [r['path'] for r in rows] == list_names  # one line per clip, in list order, the path as the list gives it
    assert [r['label'] for r in rows] == [c['label'] for c in official['clips']]
    assert [r['pred'] for r in rows] == [c['pred'] for c in official['clips']]
    got = torch.tensor([r['probs'] for r in rows], dtype=torch.float64)
    expected = torch.tensor([c['probs'] for c in official['clips']], dtype=torch.float64)
    assert (got - expected).abs().max().item() < 1e-5
    assert metrics['uar'] == pytest.approx(official['uar'], abs=1e-12)
    assert metrics['war'] == pytest.approx(official['war'], abs=1e-12)
    assert metrics['num_clips'] == len(official['clips'])
    return metrics
