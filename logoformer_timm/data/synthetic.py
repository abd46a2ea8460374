"""A generated DFER-format dataset whose classes differ only in motion (for tests and the README demo).

Each clip shows a bright square moving one step per frame in one of four directions (the class: right, left,
down, up) on a noisy background, wrapping around the frame edges (a torus). The start position is uniform, so
every single frame has the same distribution in every class: only temporal modelling can tell the classes apart.
``frozen=True`` repeats each clip's first frame instead (no motion, so no model can beat chance).

    python -m logoformer_timm.data.synthetic --output demo_data
"""
import argparse
import os
import sys
from typing import List, Optional, Tuple

import torch
from PIL import Image

from .lists import write_annotation_list

__all__ = ['DIRECTIONS', 'make_motion_clip', 'make_motion_dataset']

DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) per class: right, left, down, up


def make_motion_clip(
        label: int,
        num_frames: int,
        size: int = 32,
        patch: int = 8,
        step: int = 2,
        generator: Optional[torch.Generator] = None,
        frozen: bool = False,
) -> torch.Tensor:
    """uint8 frames ``(T, 3, size, size)``: a square moving ``step`` pixels per frame in direction ``label``."""
    dy, dx = DIRECTIONS[label]
    y0, x0 = (int(v) for v in torch.randint(0, size, (2,), generator=generator))
    base = torch.zeros(size, size)
    base[:patch, :patch] = 1.0
    frames = []
    for t in range(num_frames):
        shift = 0 if frozen else t * step
        square = torch.roll(base, (y0 + dy * shift, x0 + dx * shift), dims=(0, 1))
        noise = torch.rand(size, size, generator=generator) * 40
        frame = 30 + noise + 180 * square
        frames.append(frame.clamp(0, 255).to(torch.uint8).expand(3, size, size))
    return torch.stack(frames)


def make_motion_dataset(
        root: str,
        splits: Tuple[Tuple[str, int], ...] = (('train', 32), ('test', 16)),
        frames_range: Tuple[int, int] = (12, 20),
        size: int = 32,
        patch: int = 8,
        step: int = 2,
        seed: int = 0,
        frozen: bool = False,
        ext: str = 'png',
) -> List[str]:
    """Write frame folders and ``<split>.txt`` lists (``clips_per_class`` per split) under ``root``; return the lists."""
    generator = torch.Generator().manual_seed(seed)
    lists = []
    for split, clips_per_class in splits:
        entries = []
        for label in range(len(DIRECTIONS)):
            for i in range(clips_per_class):
                num_frames = int(torch.randint(frames_range[0], frames_range[1] + 1, (1,), generator=generator))
                clip = make_motion_clip(label, num_frames, size, patch, step, generator, frozen)
                rel_dir = f'frames/{split}/{label}_{i:04d}'
                os.makedirs(os.path.join(root, rel_dir), exist_ok=True)
                for t, frame in enumerate(clip):
                    path = os.path.join(root, rel_dir, f'{t + 1:05d}.{ext}')
                    Image.fromarray(frame.permute(1, 2, 0).numpy()).save(path, quality=95)
                entries.append((rel_dir, num_frames, label))
        lists.append(os.path.join(root, f'{split}.txt'))
        write_annotation_list(lists[-1], entries)
    return lists


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: write the motion dataset."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', required=True)
    parser.add_argument('--train-clips', type=int, default=32, help='training clips per class')
    parser.add_argument('--test-clips', type=int, default=16, help='test clips per class')
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--frozen', action='store_true', help='repeat the first frame (no motion)')
    parser.add_argument('--ext', choices=('png', 'jpg'), default='png')
    args = parser.parse_args(argv)
    lists = make_motion_dataset(
        args.output, (('train', args.train_clips), ('test', args.test_clips)), size=args.size, seed=args.seed,
        frozen=args.frozen, ext=args.ext)
    print('\n'.join(lists))
    return 0


if __name__ == '__main__':
    sys.exit(main())
