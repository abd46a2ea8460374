"""The face pipeline on a video's windows: each sampled frame detected once, tracks per window, crops per track.

A window's frames (several views of a zoo protocol one after another, repeats for short videos) are detected once
per distinct frame (detections are kept by frame index, so overlapping windows share them), linked into tracks in
time order by :class:`~logoformer_timm.faces.FacePipeline`, and the crops of the tracks asked for are laid out
again in the window's frame order. Your own boxes (one per video frame, None where unknown) replace the detector.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..faces.pipeline import FaceCrops, FacePipeline, as_detections
from ..faces.tracks import Detection
from .decode import VideoInfo

__all__ = ['Box', 'FaceDetector', 'WindowFaces']

Box = Tuple[float, float, float, float]
FaceDetector = Union[str, Callable[[np.ndarray], np.ndarray]]


class WindowFaces:
    """Face crops of a video's windows, one :class:`FacePipeline` and one detection per distinct frame.

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

    def _detect(self, indices: Sequence[int], frames: Dict[int, np.ndarray]) -> None:
        todo = [i for i in indices if i not in self._detections]
        if not todo:
            return
        if self.boxes is not None:
            found = [as_detections(np.zeros((0, 4)) if self.boxes[i] is None else np.asarray([self.boxes[i]]),
                                   self.pipeline.align, self.pipeline.margin) for i in todo]
        else:
            found = self.pipeline.detect([frames[i] for i in todo])
        self._detections.update(zip(todo, found))

    def __call__(self, frames: Sequence[np.ndarray], indices: Sequence[int],
                 faces: Optional[Sequence[int]] = (0,)) -> List[FaceCrops]:
        """Crops of the window's frames (``frames[k]`` is video frame ``indices[k]``) for each face rank in
        ``faces`` (None: every track found, at least one result); each in the window's frame order."""
        by_index = dict(zip(indices, frames))
        order = sorted(by_index)
        self._detect(order, by_index)
        tracks = self.pipeline.track([self._detections[i] for i in order], [self.info.frame_times[i] for i in order])
        position = {index: k for k, index in enumerate(order)}
        take = [position[i] for i in indices]
        ranks = range(max(1, len(tracks))) if faces is None else faces
        unique = [by_index[i] for i in order]
        return [self.pipeline.crops(unique, tracks, rank).select(take) for rank in ranks]
