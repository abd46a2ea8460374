"""A generated DFER-format dataset whose classes differ only in motion (tests, the demo of docs/training.md).

Every frame is a plaid (a vertical plus a horizontal sine grating, period 16 pixels) with uniformly random
phases, plus a little noise, so every single frame has the same distribution in every class. A class is a way
the plaid moves over the frames (``step`` pixels per frame): ``static``, ``moving`` (in one of the four
directions at random), ``horizontal`` (left or right), ``vertical`` (up or down), or one direction (``right``, ``left``, ``down``, ``up``). Only a
model that compares frames can tell the classes apart; ``frozen=True`` repeats each clip's first frame instead
(no motion: no model can beat chance on it).

    python -m logoformer_timm.dfer.synthetic --output demo_data
"""
import math
import os
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from PIL import Image

from .lists import write_annotation_list

__all__ = ['MOTIONS', 'make_motion_clip', 'make_motion_dataset']

MOTIONS = {  # class name -> the (dy, dx) velocities a clip of that class draws from
    'static': ((0, 0),),
    'horizontal': ((0, 1), (0, -1)),
    'vertical': ((1, 0), (-1, 0)),
    'moving': ((0, 1), (0, -1), (1, 0), (-1, 0)),
    'right': ((0, 1),),
    'left': ((0, -1),),
    'down': ((1, 0),),
    'up': ((-1, 0),),
}
PERIOD = 16


def make_motion_clip(
        motion: str,
        num_frames: int,
        size: int = 32,
        step: float = 4.0,
        generator: Optional[torch.Generator] = None,
        frozen: bool = False,
) -> torch.Tensor:
    """uint8 frames ``(T, 3, size, size)`` of a plaid moving ``step`` pixels per frame as ``motion`` says."""
    choices = MOTIONS[motion]
    dy, dx = choices[int(torch.randint(0, len(choices), (1,), generator=generator))]
    phase_x, phase_y = (torch.rand(2, generator=generator) * 2 * math.pi).tolist()
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing='ij')
    frames = []
    for t in range(num_frames):
        shift = 0 if frozen else t * step
        plaid = (torch.sin(2 * math.pi * (xs - dx * shift) / PERIOD + phase_x)
                 + torch.sin(2 * math.pi * (ys - dy * shift) / PERIOD + phase_y))
        frame = 128 + 50 * plaid + 8 * torch.randn(size, size, generator=generator)
        frames.append(frame.round().clamp(0, 255).to(torch.uint8).expand(3, size, size))
    return torch.stack(frames)


def make_motion_dataset(
        root: str,
        splits: Sequence[Tuple[str, int]] = (('train', 32), ('test', 16)),
        classes: Sequence[str] = ('static', 'horizontal', 'vertical'),
        frames_range: Tuple[int, int] = (12, 20),
        size: int = 32,
        step: float = 4.0,
        seed: int = 0,
        frozen: bool = False,
        ext: str = 'png',
) -> List[str]:
    """Write frame folders and a ``<split>.txt`` list per ``(split, clips_per_class)`` under ``root``; return the lists."""
    generator = torch.Generator().manual_seed(seed)
    lists = []
    for split, clips_per_class in splits:
        entries = []
        for label, motion in enumerate(classes):
            for i in range(clips_per_class):
                num_frames = int(torch.randint(frames_range[0], frames_range[1] + 1, (1,), generator=generator))
                clip = make_motion_clip(motion, num_frames, size, step, generator, frozen)
                rel_dir = f'frames/{split}/{motion}_{i:04d}'
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
    from ..cli import ArgumentParser, non_negative_int
    parser = ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', required=True)
    parser.add_argument('--classes', default='static,horizontal,vertical', help=f'from {", ".join(MOTIONS)}')
    parser.add_argument('--train-clips', type=non_negative_int, default=32, help='training clips per class')
    parser.add_argument('--test-clips', type=non_negative_int, default=16, help='test clips per class')
    parser.add_argument('--size', type=int, default=32)
    parser.add_argument('--step', type=float, default=4.0, help='pixels per frame')
    parser.add_argument('--frames', type=int, nargs=2, default=(12, 20), metavar=('MIN', 'MAX'),
                        help='frames per clip, drawn from MIN..MAX')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--frozen', action='store_true', help='repeat the first frame (no motion)')
    parser.add_argument('--ext', choices=('png', 'jpg'), default='png')
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(',') if c.strip()]
    unknown = [c for c in classes if c not in MOTIONS]
    if len(classes) < 2:
        parser.error(f'--classes {args.classes!r}: give at least two comma-separated classes from {", ".join(MOTIONS)}')
    if unknown:
        parser.error(f'unknown classes {unknown}; choose from {", ".join(MOTIONS)}')
    if not 1 <= args.frames[0] <= args.frames[1]:
        parser.error(f'--frames {args.frames[0]} {args.frames[1]}: need 1 <= MIN <= MAX')
    lists = make_motion_dataset(
        args.output, (('train', args.train_clips), ('test', args.test_clips)), classes,
        frames_range=tuple(args.frames), size=args.size, step=args.step, seed=args.seed, frozen=args.frozen,
        ext=args.ext)
    print('\n'.join(lists))
    return 0


if __name__ == '__main__':
    sys.exit(main())
