"""The DFER frame sampler: ``num_segments`` segments of ``frames_per_segment`` consecutive frames.

Protocol (``docs/architecture.md``; defaults 8 x 2 = 16 frames), with ``d = frames_per_segment``, ``S = num_segments``
and ``F`` frames in the clip:

* train: ``avg = (F - d + 1) // S``; segment ``s`` starts at ``s * avg + randint(0, avg - 1)``; when ``avg == 0``
  and ``F > S``, ``S`` sorted random starts in ``[0, F - d]``; otherwise all starts are 0.
* test: when ``F > S + d - 1``, ``tick = (F - d + 1) / S`` and ``start_s = int(tick / 2 + tick * s)``; otherwise 0
  (``short_clip='first'``), or ``0, 1, ..., F - 1`` then ``F - 1`` repeated (``short_clip='edge'``).
* each start ``p`` gives frames ``p, p + 1, ..., p + d - 1``, each clamped to ``F - 1``: short clips repeat frames.

``view`` / ``num_views`` generalise the test rule to evenly shifted deterministic clips for test-time averaging:
``start_s = int(tick * (view + 0.5) / num_views + tick * s)``, which is the protocol's rule for one view.
"""
from typing import List, Optional

import torch

__all__ = ['sample_frame_indices', 'segment_starts']


def segment_starts(
        num_frames: int,
        num_segments: int = 8,
        frames_per_segment: int = 2,
        train: bool = False,
        generator: Optional[torch.Generator] = None,
        view: int = 0,
        num_views: int = 1,
        short_clip: str = 'first',
) -> List[int]:
    """First frame of every segment, by the DFER protocol's train (random) or test (deterministic) rule."""
    if num_frames < 1:
        raise ValueError(f'A clip needs at least one frame, got num_frames={num_frames}.')
    if num_segments < 1 or frames_per_segment < 1:
        raise ValueError(
            f'num_segments and frames_per_segment must be >= 1, got {num_segments} and {frames_per_segment}.')
    if not 0 <= view < num_views:
        raise ValueError(f'view must be in [0, num_views={num_views}), got {view}.')
    span = num_frames - frames_per_segment + 1  # number of valid starts
    if train:
        avg = span // num_segments
        if avg > 0:
            offsets = torch.randint(0, avg, (num_segments,), generator=generator)
            return [s * avg + int(o) for s, o in enumerate(offsets)]
        if num_frames > num_segments:
            return sorted(int(p) for p in torch.randint(0, span, (num_segments,), generator=generator))
        return [0] * num_segments
    if num_frames > num_segments + frames_per_segment - 1:
        tick = span / num_segments
        return [int(tick * (view + 0.5) / num_views + tick * s) for s in range(num_segments)]
    if short_clip == 'edge':
        return [min(s, num_frames - 1) for s in range(num_segments)]
    if short_clip != 'first':
        raise ValueError(f"short_clip must be 'first' or 'edge', got {short_clip!r}.")
    return [0] * num_segments


def sample_frame_indices(
        num_frames: int,
        num_segments: int = 8,
        frames_per_segment: int = 2,
        train: bool = False,
        generator: Optional[torch.Generator] = None,
        view: int = 0,
        num_views: int = 1,
        short_clip: str = 'first',
) -> List[int]:
    """The ``num_segments * frames_per_segment`` frame indices of one clip (repeats frames of short clips)."""
    starts = segment_starts(
        num_frames, num_segments, frames_per_segment, train, generator, view, num_views, short_clip)
    return [min(p + i, num_frames - 1) for p in starts for i in range(frames_per_segment)]
