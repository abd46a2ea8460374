"""Face tracks over a clip's sampled frames: link detections, rank the tracks, fill short gaps, smooth lightly.

A window follows one track, so one person, never each frame's largest box. Detections are linked frame to frame
(in time order) by greedy matching on centre distance and size ratio, gated so that two people side by side never
link: a detection joins a track when it overlaps the track's last box (IoU >= :data:`MIN_IOU`) or its centre lies
within :data:`MAX_CENTRE_SHIFT` face sizes of it, and the sizes differ by at most :data:`MAX_SIZE_RATIO`. A track is
matched to its latest box however long ago that was, so a face that leaves and comes back where it was continues
its track (there is no appearance model: someone else who appears there would too). Over a video the frames are
all of its sampled frames (every window's), so a track id names the same face for the whole video.

Tracks are ranked by presence x size (the fraction of frames with a detection times the median crop side): track
0 is the main face. In a track, a frame without a detection between two detections at most ``max_gap`` seconds
apart gets the crop geometry interpolated linearly in time (centre, log side, angle): ``'interpolated'``; any other
frame holds the nearest detection's geometry: ``'held'`` (a crop is still made, but it does not count as a face).
Smoothing averages each frame's geometry with its neighbours' (weights 1/4, 1/2, 1/4) where they are faces of the
same alignment mode within ``max_gap``.

A face near the plausibility threshold of its landmarks (:func:`~.align.plausible_landmarks`, e.g. a yawed face
that moves) can fall back to ``'box'`` every other frame; switching geometry frame by frame would make the crop
jump. So a fallback frame of a track whose other frames use their landmarks takes their alignment relative to its
own box (centre offset and log side in box sides, and angle), interpolated in time from the landmark frames around
it at most ``max_gap`` apart, or held from the nearest one within ``max_gap``: its mode is then ``'roll-carried'``
(or ``'similarity-carried'``), and it is smoothed with the landmark frames. In ``'roll'`` that keeps the box's
centre and side and only carries the angle. Frames farther from any landmark frame keep ``'box'``.
"""
import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .align import FaceGeometry

__all__ = ['MIN_IOU', 'MAX_CENTRE_SHIFT', 'MAX_SIZE_RATIO', 'Detection', 'TrackFrame', 'FaceTrack', 'link_cost',
           'link_detections', 'build_tracks', 'box_iou', 'base_mode']

MIN_IOU = 0.3
MAX_CENTRE_SHIFT = 0.5  # centre distance / mean face size
MAX_SIZE_RATIO = 1.5


@dataclass
class Detection:
    """One face found in one frame, and the crop geometry its alignment gives."""
    box: np.ndarray  # (4,) x1, y1, x2, y2 frame pixels
    landmarks: Optional[np.ndarray]  # (5, 2) eyes, nose, mouth corners (image left first), or None (boxes only)
    score: float  # detector confidence; nan for a detector that gives none
    geometry: FaceGeometry


@dataclass
class TrackFrame:
    """One frame of a track: how its face was obtained and where the crop sits."""
    status: str  # 'detected', 'interpolated' (a short gap) or 'held' (no face: the nearest geometry, for a crop)
    geometry: FaceGeometry  # after gap filling and smoothing
    box: np.ndarray  # the detected box, else interpolated / held from the nearest ones
    detection: Optional[Detection] = None  # set when detected

    @property
    def has_face(self) -> bool:
        """Detected, or inside a short gap between detections."""
        return self.status != 'held'


@dataclass
class FaceTrack:
    """One face followed over the frames; ``id`` is its rank (0: the main face, by presence x size)."""
    id: int
    frames: List[TrackFrame]
    size: float  # median crop side of its detections, frame pixels
    detections: Dict[int, Detection] = field(default_factory=dict)  # frame -> its detection

    @property
    def presence(self) -> float:
        """Fraction of the frames with a face (detected or interpolated)."""
        return sum(f.has_face for f in self.frames) / len(self.frames)

    def select(self, positions: Sequence[int]) -> 'FaceTrack':
        """The same track (same id and size) at the frames ``positions`` only: e.g. one window of a video's track."""
        picked = {p: k for k, p in enumerate(positions)}
        return FaceTrack(self.id, [self.frames[p] for p in positions], self.size,
                         {picked[p]: d for p, d in self.detections.items() if p in picked})


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    iw = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.


def link_cost(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Cost of linking box ``b`` to a track whose last box is ``a`` (centre shift in face sizes plus the log size
    ratio), or None when they cannot be the same face."""
    size_a, size_b = max(a[2] - a[0], a[3] - a[1]), max(b[2] - b[0], b[3] - b[1])
    ratio = max(size_a, size_b) / min(size_a, size_b)
    if ratio > MAX_SIZE_RATIO:
        return None
    shift = math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2) / ((size_a + size_b) / 2)
    if shift > MAX_CENTRE_SHIFT and box_iou(a, b) < MIN_IOU:
        return None
    return shift + math.log(ratio)


def link_detections(detections: Sequence[Sequence[Detection]]) -> List[Dict[int, int]]:
    """Tracks as ``{frame: detection index}``, linking each frame's detections (frames in time order) greedily,
    lowest cost first, to the tracks' last boxes; a detection left over starts a track."""
    tracks: List[Dict[int, int]] = []
    last_boxes: List[np.ndarray] = []  # per track, its latest box
    for frame, found in enumerate(detections):
        pairs = []
        for t, last in enumerate(last_boxes):
            for d, det in enumerate(found):
                cost = link_cost(last, det.box)
                if cost is not None:
                    pairs.append((cost, t, d))
        used_tracks, used_dets = set(), set()
        for _, t, d in sorted(pairs):
            if t not in used_tracks and d not in used_dets:
                tracks[t][frame] = d
                last_boxes[t] = found[d].box
                used_tracks.add(t)
                used_dets.add(d)
        new = [d for d in range(len(found)) if d not in used_dets]
        tracks.extend({frame: d} for d in new)
        last_boxes.extend(found[d].box for d in new)
    return tracks


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _fill(known: Dict[int, np.ndarray], times: np.ndarray, max_gap: Optional[float], angle: bool):
    """Per frame: (status, values, nearest known frame) from the known frames' values (with ``angle``, the last
    column is an angle, interpolated along the shorter way round)."""
    frames = sorted(known)
    out = []
    for i in range(len(times)):
        if i in known:
            out.append(('detected', known[i], i))
            continue
        pos = bisect.bisect_left(frames, i)  # the known frames around i: frames[pos - 1] < i < frames[pos]
        before, after = frames[max(pos - 1, 0):pos], frames[pos:pos + 1]
        nearest = min(before + after, key=lambda k: (abs(times[k] - times[i]), k))  # times are non-decreasing
        if before and after:
            k0, k1 = before[-1], after[0]
            span = times[k1] - times[k0]
            if max_gap is None or span <= max_gap:
                w = (times[i] - times[k0]) / span if span > 0 else 0.5
                delta = known[k1] - known[k0]
                if angle:
                    delta[-1] = _wrap(delta[-1])
                out.append(('interpolated', known[k0] + w * delta, k0 if w < 0.5 else k1))
                continue
        out.append(('held', known[nearest], nearest))
    return out


def base_mode(mode: str) -> str:
    """The alignment a mode stands for: ``'roll'`` for ``'roll-carried'``."""
    return mode.split('-')[0]


def _relative(geometry: FaceGeometry, box: np.ndarray) -> np.ndarray:
    """A geometry relative to a box: (centre offset x, y and log side, in box sides; angle)."""
    side = max(box[2] - box[0], box[3] - box[1])
    return np.array([(geometry.cx - (box[0] + box[2]) / 2) / side, (geometry.cy - (box[1] + box[3]) / 2) / side,
                     math.log(geometry.side / side), geometry.angle])


def _carry_alignment(dets: Dict[int, 'Detection'], times: np.ndarray,
                     max_gap: Optional[float]) -> Dict[int, FaceGeometry]:
    """Per detected frame, its geometry; a ``'box'`` fallback frame near the track's landmark frames gets their
    alignment relative to its own box (see the module docstring)."""
    geometries = {i: d.geometry for i, d in dets.items()}
    landmark = {i: g for i, g in geometries.items() if g.mode != 'box'}
    if not landmark or len(landmark) == len(geometries):
        return geometries
    mode = Counter(g.mode for g in landmark.values()).most_common(1)[0][0]
    known = {i: _relative(g, np.asarray(dets[i].box, dtype=np.float64)) for i, g in landmark.items()}
    filled = _fill(known, times, max_gap, True)
    for i in set(geometries) - set(landmark):
        status, rel, nearest = filled[i]
        if status == 'held' and max_gap is not None and abs(times[nearest] - times[i]) > max_gap:
            continue
        x1, y1, x2, y2 = (float(v) for v in dets[i].box)
        side = max(x2 - x1, y2 - y1)
        geometries[i] = FaceGeometry((x1 + x2) / 2 + rel[0] * side, (y1 + y2) / 2 + rel[1] * side,
                                     side * math.exp(rel[2]), float(rel[3]), f'{mode}-carried')
    return geometries


def _smooth(values: np.ndarray, usable: np.ndarray, linked) -> np.ndarray:
    """Weights 1/4, 1/2, 1/4 over each frame and its neighbours; a neighbour that is not ``linked`` counts as the
    frame itself. ``values`` rows: (cx, cy, log side, angle)."""
    out = values.copy()
    for i in np.flatnonzero(usable):
        prev = values[i - 1] if i > 0 and linked(i - 1, i) else values[i]
        nxt = values[i + 1] if i + 1 < len(values) and linked(i, i + 1) else values[i]
        offsets = np.stack([prev - values[i], nxt - values[i]])
        offsets[:, 3] = _wrap(offsets[:, 3])
        out[i] = values[i] + offsets.sum(0) / 4
    return out


def build_tracks(
        detections: Sequence[Sequence[Detection]],
        times: Optional[Sequence[float]] = None,
        max_gap: Optional[float] = 0.5,
        smooth: bool = True,
) -> List[FaceTrack]:
    """The face tracks of a clip's frames, main face first.

    Args:
        detections: Per frame (in time order), its faces.
        times: Per frame, seconds (non-decreasing). None: the frames are consecutive and every gap between two
            detections of a track is filled.
        max_gap: Longest time (seconds) between two detections whose frames in between are interpolated.
        smooth: Average each frame's geometry with its neighbours' (see the module docstring).
    """
    n = len(detections)
    if times is None:
        times, max_gap = np.arange(n, dtype=np.float64), None
    times = np.asarray(times, dtype=np.float64)
    if len(times) != n:
        raise ValueError(f'Got {len(times)} frame times for {n} frames; pass one time per frame.')
    if n and (np.diff(times) < 0).any():
        raise ValueError('Frame times must be non-decreasing: pass the frames in time order.')
    tracks = []
    for links in link_detections(detections):
        dets = {i: detections[i][d] for i, d in links.items()}
        geometries = _carry_alignment(dets, times, max_gap)
        filled = _fill({i: g.as_array() for i, g in geometries.items()}, times, max_gap, True)
        boxes = _fill({i: np.asarray(d.box, dtype=np.float64) for i, d in dets.items()}, times, max_gap, False)
        values = np.stack([v for _, v, _ in filled])
        modes = [geometries[k].mode for _, _, k in filled]
        statuses = [s for s, _, _ in filled]
        if smooth:
            def linked(i: int, j: int) -> bool:
                return (statuses[i] != 'held' and statuses[j] != 'held' and base_mode(modes[i]) == base_mode(modes[j])
                        and (max_gap is None or times[j] - times[i] <= max_gap))
            values = _smooth(values, np.array([s != 'held' for s in statuses]), linked)
        frames = [TrackFrame(status, FaceGeometry.from_array(v, mode), box, dets.get(i))
                  for i, (status, v, mode, (_, box, _)) in enumerate(zip(statuses, values, modes, boxes))]
        size = float(np.median([d.geometry.side for d in dets.values()]))
        tracks.append(FaceTrack(-1, frames, size, dets))
    first = {id(t): min(t.detections) for t in tracks}
    tracks.sort(key=lambda t: (-sum(f.status == 'detected' for f in t.frames) * t.size, first[id(t)]))
    for rank, track in enumerate(tracks):
        track.id = rank
    return tracks
