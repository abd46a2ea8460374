"""The face pipeline on a video's windows: each sampled frame detected once, tracks over the whole video, crops per
window and track.

Tracks are video-wide, so a track id names the same face in every window: first every window's frames are detected
(:meth:`WindowFaces.detect`; once per distinct frame, so overlapping windows, a protocol's views and the repeats of a
short video share them), then the detections of all the sampled frames, in time order, are linked into tracks ranked
over the video by presence x size (track 0: the video's main face), and each window takes its frames of the tracks
asked for, in its own frame order (repeats included). :func:`iter_windows` runs the two passes over a video. Your
own boxes (one per video frame, None where unknown) replace the detector.
"""
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..faces.pipeline import FaceCrops, FacePipeline, as_detections
from ..faces.tracks import Detection, FaceTrack
from .decode import PathLike, VideoInfo, iter_clips, timed_clips

__all__ = ['Box', 'FaceDetector', 'FRAME_CACHE_BYTES', 'WindowFaces', 'iter_windows']

Box = Tuple[float, float, float, float]
FaceDetector = Union[str, Callable[[np.ndarray], np.ndarray]]
FRAME_CACHE_BYTES = 512 * 2 ** 20  # the detection pass keeps the sampled frames up to this; beyond, decode again


class WindowFaces:
    """Face crops of a video's windows along video-wide tracks, one detection per distinct sampled frame.

    Call :meth:`detect` on every window first, then the object on each window; a single window may be called
    directly (it is detected then). Tracks are built at the first call and cover the frames detected until then.

    Args:
        pipeline: The face pipeline (detector, alignment, crop size, margin).
        info: The video (frame times for the tracks' gaps; the frame count that ``boxes`` must match).
        boxes: Your own face box per video frame (``(x1, y1, x2, y2)`` or None); skips the detector.
    """

    def __init__(self, pipeline: FacePipeline, info: VideoInfo, boxes: Optional[Sequence[Optional[Box]]] = None):
        if boxes is not None and len(boxes) != info.num_frames:
            raise ValueError(
                f'boxes must hold one (x1, y1, x2, y2) box or None per video frame ({info.num_frames} frames), '
                f'got {len(boxes)}.')
        self.pipeline, self.info, self.boxes = pipeline, info, boxes
        self._detections: Dict[int, List[Detection]] = {}
        self._tracks: Optional[List[FaceTrack]] = None
        self._position: Dict[int, int] = {}  # video frame index -> its position in the tracks' frames

    def detect(self, frames: Sequence[np.ndarray], indices: Sequence[int]) -> None:
        """Detect the faces of a window's frames (``frames[k]`` is video frame ``indices[k]``) not seen yet."""
        by_index = dict(zip(indices, frames))
        todo = sorted(i for i in by_index if i not in self._detections)
        if not todo:
            return
        if self._tracks is not None:
            raise RuntimeError('Detect every window before cropping any: the tracks are built over the whole video.')
        if self.boxes is not None:
            found = [as_detections(np.zeros((0, 4)) if self.boxes[i] is None else np.asarray([self.boxes[i]]),
                                   self.pipeline.align, self.pipeline.margin) for i in todo]
        else:
            found = self.pipeline.detect([by_index[i] for i in todo])
        self._detections.update(zip(todo, found))

    @property
    def tracks(self) -> List[FaceTrack]:
        """The video's face tracks over every detected frame (in time order), main face first."""
        if self._tracks is None:
            order = sorted(self._detections)
            self._position = {index: k for k, index in enumerate(order)}
            self._tracks = self.pipeline.track([self._detections[i] for i in order],
                                               [self.info.frame_times[i] for i in order])
        return self._tracks

    def __call__(self, frames: Sequence[np.ndarray], indices: Sequence[int],
                 faces: Optional[Sequence[int]] = (0,)) -> List[FaceCrops]:
        """Crops of the window's frames (``frames[k]`` is video frame ``indices[k]``) for each video-wide track id
        in ``faces`` (None: every track with a face in this window, else the main one), in the window's order."""
        self.detect(frames, indices)
        tracks = self.tracks
        by_index = dict(zip(indices, frames))
        order = sorted(by_index)
        order_position = {index: k for k, index in enumerate(order)}
        unique = [by_index[i] for i in order]
        positions = [self._position[i] for i in order]
        take = [order_position[i] for i in indices]
        selected: Dict[int, Optional[FaceTrack]] = {}

        def in_window(track_id: int) -> Optional[FaceTrack]:
            """Track ``track_id`` at this window's distinct frames (None: no such track)."""
            if track_id not in selected:
                selected[track_id] = tracks[track_id].select(positions) if track_id < len(tracks) else None
            return selected[track_id]

        if faces is None:
            faces = [t.id for t in tracks if any(f.has_face for f in in_window(t.id).frames)] or [0]
        return [self.pipeline.track_crops(unique, in_window(i), len(tracks), i).select(take) for i in faces]


def iter_windows(path: PathLike, plans: Sequence[Sequence[int]], window_faces: WindowFaces,
                 timing: Dict[str, float], cache_bytes: int = FRAME_CACHE_BYTES
                 ) -> Iterator[Tuple[int, List[np.ndarray]]]:
    """``(window number, frames)`` of every plan, after all of them are detected (:class:`WindowFaces`): the
    detection pass keeps the frames while they fit in ``cache_bytes``, else the video is decoded again. Adds the
    seconds spent to ``timing['decode']`` and ``timing['faces']``."""
    kept: Optional[Dict[int, np.ndarray]] = {}
    size = 0
    for number, frames in timed_clips(iter_clips(path, plans), timing):
        tic = time.perf_counter()
        window_faces.detect(frames, plans[number])
        timing['faces'] += time.perf_counter() - tic
        for index, frame in zip(plans[number], frames):
            if kept is not None and index not in kept:
                kept[index], size = frame, size + frame.nbytes
                kept = kept if size <= cache_bytes else None
    if kept is not None:
        for number, plan in enumerate(plans):
            yield number, [kept[i] for i in plan]
    else:
        yield from timed_clips(iter_clips(path, plans), timing)

