"""Frames to aligned face crops: detect (batched), align, link into tracks, warp; one object, :class:`FacePipeline`.

API (stable)::

    pipeline = FacePipeline(detector='retinaface', align='roll', size=224, margin=1.25, max_gap=0.5, smooth=True)
    faces = pipeline(frames, times)            # FaceCrops of the main face (face=0); frames: (H, W, 3) uint8 RGB
    faces.crops                                # (T, size, size, 3) uint8, the crops a model sees
    faces.boxes, faces.landmarks, faces.scores, faces.transforms, faces.detected, faces.status, faces.alignment
    faces.track_id, faces.presence, faces.reliable, faces.reason, faces.num_tracks

    detections = pipeline.detect(frames)       # per frame: List[Detection] (box, landmarks, score, geometry)
    tracks = pipeline.track(detections, times) # List[FaceTrack], main face first
    faces = pipeline.crops(frames, tracks, face=1)   # the second face's crops; face=None: centre crops
    faces = pipeline.track_crops(frames, tracks[1].select(positions), len(tracks), face=1)  # at some frames only

``times`` are the frames' seconds (non-decreasing); gaps up to ``max_gap`` between two detections of a track are
interpolated. Without times the frames count as consecutive and every gap inside a track is filled.
``transforms[t]`` is the ``(2, 3)`` frame-to-crop matrix of frame ``t`` (see :func:`~.align.crop_matrix`;
``align.transform_points`` maps landmarks into the crop). A window is ``reliable`` when its face is present
(detected or interpolated) in at least ``min_presence`` of its frames (DFEW's clip rule: half).

``detector``: ``'retinaface'`` (default, weights in the package, 5 landmarks), ``'haar'`` (OpenCV's cascade, the
``haar`` extra; boxes only), a :class:`~.detect.RetinaFaceDetector` (called batched), or your own callable
``frame -> (N, 4) boxes`` (x1, y1, x2, y2 pixels; boxes only) or ``frame -> FaceDetections``-like (``boxes``,
``landmarks``, ``scores``). Frames without landmarks are aligned by their box.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np

from .align import (
    ALIGN_MODES, DEFAULT_MARGIN, FaceGeometry, align_face, crop_matrix, resize_frame, transform_points, warp_crop)
from .tracks import Detection, FaceTrack, build_tracks

__all__ = ['DETECTORS', 'MIN_PRESENCE', 'FacePipeline', 'FaceCrops', 'NoFaceError', 'as_detections',
           'centre_geometry', 'resize_frames', 'crop_landmarks']

DETECTORS = ('retinaface', 'haar')
MIN_PRESENCE = 0.5  # DFEW drops clips with a face in fewer than half of their frames


class NoFaceError(ValueError):
    """No reliable face in a clip (or in any window of a video)."""


@dataclass
class FaceCrops:
    """One face's crops over a clip's frames, and per frame how each was obtained."""
    crops: np.ndarray  # (T, size, size, 3) uint8 RGB
    transforms: List[np.ndarray]  # per frame: (2, 3) frame-pixels-to-crop-pixels matrix
    boxes: List[Optional[np.ndarray]]  # per frame: face box (detected, interpolated or held); None without a face
    landmarks: List[Optional[np.ndarray]]  # per frame: (5, 2) detected landmarks, None when not detected / given
    scores: List[float]  # per frame: detector score; nan when not detected or the detector gives none
    status: List[str]  # per frame: 'detected', 'interpolated', 'held', or 'none' (centre crop, no face track)
    alignment: List[str]  # per frame: 'roll', 'box', 'similarity', 'roll-carried' / 'similarity-carried' (its
    # landmarks fell back to the box; its neighbours' alignment carried onto its box, faces.tracks) or 'centre'
    track_id: Optional[int]  # rank of the track followed (0: the main face), None: no face track
    num_tracks: int
    min_presence: float = MIN_PRESENCE
    face: Optional[int] = 0  # the track asked for
    warnings: List[str] = field(default_factory=list)

    def select(self, indices: Sequence[int]) -> 'FaceCrops':
        """The same face at the frames ``indices`` (repeats allowed): e.g. a protocol's views of unique frames."""
        def pick(values):
            return [values[i] for i in indices]
        return FaceCrops(
            self.crops[list(indices)], pick(self.transforms), pick(self.boxes), pick(self.landmarks), pick(self.scores),
            pick(self.status), pick(self.alignment), self.track_id, self.num_tracks, self.min_presence, self.face,
            list(self.warnings))

    @property
    def detected(self) -> List[bool]:
        """Per frame: the detector found this face there."""
        return [s == 'detected' for s in self.status]

    @property
    def presence(self) -> float:
        """Fraction of the frames with this face (detected or interpolated over a short gap)."""
        return sum(s in ('detected', 'interpolated') for s in self.status) / len(self.status)

    @property
    def reliable(self) -> bool:
        """A face in at least ``min_presence`` of the frames."""
        return self.track_id is not None and self.presence >= self.min_presence

    @property
    def reason(self) -> Optional[str]:
        """Why the clip has no reliable face, None when it has one."""
        if self.reliable:
            return None
        n = len(self.status)
        if self.track_id is None:
            if self.num_tracks and self.face is not None:
                return f'no face {self.face} (faces are counted from 0): {self.num_tracks} face track(s) found'
            if self.num_tracks:
                return 'centre crops asked for (face=None)'
            return f'no face found in any of the {n} sampled frames'
        faces = sum(s in ('detected', 'interpolated') for s in self.status)
        return (f'a face in only {faces} of the {n} sampled frames, fewer than {self.min_presence:.0%} '
                f'(no reliable face)')


def as_detections(output: Any, mode: str, margin: float) -> List[Detection]:
    """A detector's output for one frame (``(N, 4)`` boxes, or an object with ``boxes``, ``landmarks`` and
    ``scores``) as :class:`~.tracks.Detection` s aligned by ``mode``."""
    def array(x):
        return np.asarray(x.detach().cpu() if hasattr(x, 'detach') else x, dtype=np.float64)

    if hasattr(output, 'boxes'):
        boxes = array(output.boxes).reshape(-1, 4)
        landmarks = getattr(output, 'landmarks', None)
        landmarks = array(landmarks).reshape(-1, 5, 2) if landmarks is not None else [None] * len(boxes)
        scores = getattr(output, 'scores', None)
        scores = array(scores).reshape(-1) if scores is not None else np.full(len(boxes), math.nan)
    else:
        boxes = array(output)
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise ValueError(f'A face detector must return (N, 4) boxes (x1, y1, x2, y2) per frame, got shape '
                             f'{boxes.shape}.')
        boxes = boxes.reshape(-1, 4)
        landmarks, scores = [None] * len(boxes), np.full(len(boxes), math.nan)
    found = []
    for box, points, score in zip(boxes, landmarks, scores):
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f'Face boxes must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {tuple(box)}.')
        found.append(Detection(box, points, float(score), align_face(box, points, mode, margin)))
    return found


def centre_geometry(frame_shape: Sequence[int]) -> FaceGeometry:
    """The largest centred square of a frame of shape ``(H, W, ...)``: the crop of a clip without a face."""
    height, width = frame_shape[:2]
    return FaceGeometry(width / 2, height / 2, float(min(height, width)), 0., 'centre')


def _build_detector(detector: Union[str, Callable, None], device: str):
    """(callable, batched): the named detectors, or the user's callable (per frame unless a RetinaFaceDetector)."""
    if detector is None or detector == 'retinaface':
        from .detect import RetinaFaceDetector
        return RetinaFaceDetector(device=device), True
    if detector == 'haar':
        from .haar import HaarFaceDetector
        return HaarFaceDetector(), False
    if isinstance(detector, str):
        raise ValueError(f'Unknown face detector {detector!r}; choose one of {", ".join(DETECTORS)} or pass a '
                         f'callable frame -> (N, 4) boxes.')
    if not callable(detector):
        raise TypeError(f'detector must be a name or a callable, got {type(detector).__name__}.')
    from .detect import RetinaFaceDetector
    return detector, isinstance(detector, RetinaFaceDetector)


class FacePipeline:
    """Frames to face tracks and aligned crops (see the module docstring for the API).

    Args:
        detector: ``'retinaface'``, ``'haar'``, a RetinaFaceDetector or a callable ``frame -> (N, 4) boxes``.
        align: ``'roll'`` (default), ``'box'`` or ``'similarity'`` (:mod:`logoformer_timm.faces.align`).
        size: Crop side in pixels (see :func:`~.align.face_crop_size` for a model's).
        margin: Crop side / face box side (an estimate; docs/prediction.md says how to check it).
        max_gap: Longest gap (seconds) between two detections that is interpolated.
        smooth: Lightly smooth the crop geometry over neighbouring frames.
        min_presence: Fraction of the frames a face must be in for the clip to count as having one.
        device: Torch device of the RetinaFace network.
    """

    def __init__(
            self,
            detector: Union[str, Callable, None] = 'retinaface',
            align: str = 'roll',
            size: int = 224,
            margin: float = DEFAULT_MARGIN,
            max_gap: Optional[float] = 0.5,
            smooth: bool = True,
            min_presence: float = MIN_PRESENCE,
            device: str = 'cpu',
    ):
        if align not in ALIGN_MODES:
            raise ValueError(f'Unknown face alignment {align!r}; choose one of {", ".join(ALIGN_MODES)}.')
        if not (isinstance(size, int) and size > 0) or not margin > 0:
            raise ValueError(f'size must be a positive int and margin positive, got size={size!r}, margin={margin}.')
        self.detector, self.batched = _build_detector(detector, device)
        self.align, self.size, self.margin = align, size, margin
        self.max_gap, self.smooth, self.min_presence = max_gap, smooth, min_presence

    def detect(self, frames: Sequence[np.ndarray]) -> List[List[Detection]]:
        """Per frame, its faces (best first for RetinaFace), each with its aligned crop geometry."""
        outputs = self.detector(list(frames)) if self.batched else [self.detector(f) for f in frames]
        return [as_detections(out, self.align, self.margin) for out in outputs]

    def track(self, detections: Sequence[Sequence[Detection]],
              times: Optional[Sequence[float]] = None) -> List[FaceTrack]:
        """Face tracks over the frames (in time order), main face first (:func:`~.tracks.build_tracks`)."""
        return build_tracks(detections, times, self.max_gap, self.smooth)

    def crops(self, frames: Sequence[np.ndarray], tracks: Sequence[FaceTrack], face: Optional[int] = 0) -> FaceCrops:
        """Crops of track ``face`` (its rank); centre crops when there is no such track (then ``reliable`` is False)."""
        track = tracks[face] if face is not None and face < len(tracks) else None
        return self.track_crops(frames, track, len(tracks), face)

    def track_crops(self, frames: Sequence[np.ndarray], track: Optional[FaceTrack], num_tracks: int,
                    face: Optional[int] = 0) -> FaceCrops:
        """Crops of ``track`` over ``frames`` (one per track frame), one of ``num_tracks``; None: centre crops."""
        if track is not None:
            geometries = [f.geometry for f in track.frames]
            status = [f.status for f in track.frames]
            dets = [f.detection for f in track.frames]
            boxes = [np.asarray(f.box) for f in track.frames]
            track_id = track.id
        else:
            geometries = [centre_geometry(f.shape) for f in frames]
            status, dets, boxes, track_id = ['none'] * len(frames), [None] * len(frames), [None] * len(frames), None
        transforms = [crop_matrix(g, self.size) for g in geometries]
        crops = np.stack([warp_crop(f, m, self.size) for f, m in zip(frames, transforms)])
        return FaceCrops(
            crops, transforms, boxes, [None if d is None else d.landmarks for d in dets],
            [math.nan if d is None else d.score for d in dets], status, [g.mode for g in geometries], track_id,
            num_tracks, self.min_presence, face)

    def __call__(self, frames: Sequence[np.ndarray], times: Optional[Sequence[float]] = None,
                 face: Optional[int] = 0) -> FaceCrops:
        """Detect, track and crop: the crops of face ``face`` (0: the main face by presence x size)."""
        if not len(frames):
            raise ValueError('FacePipeline needs at least one frame.')
        return self.crops(frames, self.track(self.detect(frames), times), face)


def resize_frames(frames: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Frames that already are face crops, each resized to ``size`` (``--no-detect``)."""
    return np.stack([resize_frame(f, size) for f in frames])


def crop_landmarks(faces: FaceCrops) -> List[Optional[np.ndarray]]:
    """Per frame, the detected landmarks in crop pixels (None where not detected)."""
    return [None if p is None else transform_points(m, p) for p, m in zip(faces.landmarks, faces.transforms)]
