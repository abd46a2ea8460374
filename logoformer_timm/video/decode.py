"""Streaming video reading with PyAV: metadata, uniform frame sampling and sliding windows.

A video is read twice, never held whole: :func:`probe_video` demuxes the packets (no decoding) to learn the
presentation time of every frame, and :func:`iter_clips` decodes once from the start, keeping only the frames
some clip still needs and handing each clip over as soon as its last frame is decoded.

Frames are ``(H, W, 3)`` uint8 RGB numpy arrays. Needs the ``video`` extra (``pip install logoformer-timm[video]``).
"""
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Sequence, Tuple, Union

import numpy as np

__all__ = [
    'VideoError', 'VideoInfo', 'probe_video', 'uniform_indices', 'sliding_windows', 'window_indices', 'iter_clips',
    'timed_clips']

PathLike = Union[str, os.PathLike]


class VideoError(ValueError):
    """A file that cannot be used as a video: missing, not a video, corrupt, or without frames."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, from its packets: size, frame rate, exact frame count and per-frame times."""
    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float  # seconds from the first frame's start to the last frame's end
    codec: str
    frame_times: Tuple[float, ...] = field(repr=False)  # presentation time of each frame, seconds from the first


def _import_av():
    try:
        import av
    except ImportError as e:
        raise ImportError(
            'Reading videos needs PyAV: pip install "logoformer-timm[video]" (or pip install av).') from e
    return av


def _open(path: PathLike):
    """Open ``path`` with PyAV and return ``(container, video_stream)``, turning FFmpeg failures into VideoError."""
    av = _import_av()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(f'No such file: {path!r}.')
    if os.path.isdir(path):
        raise VideoError(f'{path!r} is a directory, not a video file.')
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise VideoError(f'{path!r} is not a readable video ({e.strerror or e}).') from None
    if not container.streams.video:
        container.close()
        raise VideoError(f'{path!r} contains no video stream (streams: {len(container.streams)}).')
    return container, container.streams.video[0]


def probe_video(path: PathLike) -> VideoInfo:
    """Read a video's metadata and frame times by demuxing its packets (fast: nothing is decoded)."""
    av = _import_av()
    container, stream = _open(path)
    with container:
        pts = []
        try:
            for packet in container.demux(stream):
                # packets without data flush the demuxer; discarded ones (edit lists) are never shown
                if packet.size and not packet.is_discard:
                    pts.append(packet.pts)
        except av.error.FFmpegError as e:
            raise VideoError(f'{os.fspath(path)!r} is corrupt: demuxing failed after {len(pts)} packets ({e}).') from None
        if not pts:
            raise VideoError(f'{os.fspath(path)!r} has a video stream but no frames.')
        rate = stream.guessed_rate or stream.average_rate
        if any(p is None for p in pts):  # raw streams without timestamps: assume a constant frame rate
            if not rate:
                raise VideoError(f'{os.fspath(path)!r} has neither frame timestamps nor a frame rate.')
            times = np.arange(len(pts)) / float(rate)
        else:
            times = np.sort(np.asarray(pts, dtype=np.float64)) * float(stream.time_base)
            times -= times[0]
        fps = float(rate) if rate else (len(times) - 1) / max(times[-1], 1e-9)
        return VideoInfo(
            path=os.fspath(path),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps,
            num_frames=len(times),
            duration=float(times[-1] + 1. / fps),
            codec=stream.codec_context.name,
            frame_times=tuple(times.tolist()),
        )


def uniform_indices(num_frames: int, num_samples: int = 16, start: int = 0) -> List[int]:
    """Centre frame of each of ``num_samples`` equal segments of ``num_frames`` frames; repeats when too short."""
    if num_frames < 1 or num_samples < 1:
        raise ValueError(f'Need num_frames >= 1 and num_samples >= 1, got {num_frames} and {num_samples}.')
    return [start + int((k + 0.5) * num_frames / num_samples) for k in range(num_samples)]


MAX_WINDOWS = 2000  # windows of one video: more is a mistaken --stride, not a timeline anyone reads


def sliding_windows(duration: float, window: float, stride: float) -> List[Tuple[float, float]]:
    """``(start, end)`` seconds of windows every ``stride``; a last window ends at ``duration`` so none is lost.

    At most :data:`MAX_WINDOWS` windows: a tiny stride is refused rather than silently running for hours.
    """
    if not (math.isfinite(window) and window > 0 and math.isfinite(stride) and stride > 0):
        raise ValueError(f'--window and --stride must be finite positive seconds, got {window} and {stride}.')
    if duration <= window:
        return [(0., duration)]
    count = int(math.floor((duration - window) / stride + 1e-9)) + 1
    if count > MAX_WINDOWS:
        raise ValueError(
            f'--window {window:g} s every --stride {stride:g} s gives {count} windows over {duration:.1f} s, more than '
            f'{MAX_WINDOWS}; pass a larger --stride (at least {(duration - window) / MAX_WINDOWS:.3g} s).')
    windows = [(k * stride, k * stride + window) for k in range(count)]
    if windows[-1][1] < duration - 1e-9:
        windows.append((duration - window, duration))
    return windows


def window_indices(info: VideoInfo, start: float, end: float) -> range:
    """Indices of the frames shown in ``[start, end)`` seconds (at least the frame shown at ``start``)."""
    times = np.asarray(info.frame_times)
    first = max(int(np.searchsorted(times, start, side='right')) - 1, 0)
    last = max(int(np.searchsorted(times, end, side='left')), first + 1)
    return range(first, min(last, info.num_frames))


def iter_clips(path: PathLike, clips: Sequence[Sequence[int]]) -> Iterator[Tuple[int, List[np.ndarray]]]:
    """Decode once and yield ``(clip_number, frames)`` per clip of frame indices, in the order clips complete.

    Only frames that a pending clip still needs are kept, so memory is bounded by the clips, not the video.
    """
    av = _import_av()
    needed_by: Dict[int, List[int]] = {}
    for number, indices in enumerate(clips):
        for index in set(indices):
            needed_by.setdefault(index, []).append(number)
    remaining = [len(set(indices)) for indices in clips]
    kept: Dict[int, np.ndarray] = {}
    last_needed = max(needed_by, default=-1)
    container, stream = _open(path)
    stream.thread_type = 'AUTO'
    decoded = 0
    with container:
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index in needed_by:
                    kept[index] = frame.to_ndarray(format='rgb24')
                    for number in needed_by[index]:
                        remaining[number] -= 1
                        if remaining[number] == 0:
                            yield number, [kept[i] for i in clips[number]]
                            for i in set(clips[number]):  # release frames no other pending clip needs
                                if all(remaining[n] == 0 for n in needed_by[i]):
                                    kept.pop(i, None)
                if index >= last_needed:
                    return
        except av.error.FFmpegError as e:
            raise VideoError(f'{os.fspath(path)!r} is corrupt: decoding failed at frame {decoded} ({e}).') from None
    raise VideoError(
        f'{os.fspath(path)!r} is truncated or corrupt: only {decoded} frames decode, but frame {last_needed} '
        f'was expected from its packets.')


def timed_clips(clips: Iterable[Tuple[int, List[np.ndarray]]],
                timing: Dict[str, float]) -> Iterator[Tuple[int, List[np.ndarray]]]:
    """The items of ``clips`` (e.g. :func:`iter_clips`), adding the seconds each took to ``timing['decode']``."""
    clips = iter(clips)
    while True:
        tic = time.perf_counter()
        item = next(clips, None)
        timing['decode'] += time.perf_counter() - tic
        if item is None:
            return
        yield item
