"""Face crops for a clip: detect, keep the largest face, fill and smooth boxes over time, square crop, resize.

A detector is any callable ``frame -> boxes``: ``frame`` an ``(H, W, 3)`` uint8 RGB array, ``boxes`` an
``(N, 4)`` array of ``(x1, y1, x2, y2)`` pixels (N may be 0). Bring your own (MTCNN, RetinaFace, ...) or use
:class:`HaarFaceDetector`, OpenCV's bundled frontal-face cascade (``opencv-python-headless<5``, ``video`` extra).
"""
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    'FaceDetector', 'HaarFaceDetector', 'NoFaceError', 'FaceCrops', 'largest_box', 'fill_and_smooth_boxes',
    'square_box', 'crop_box', 'resize_frame', 'centre_box', 'crop_faces', 'box_iou']

FaceDetector = Callable[[np.ndarray], np.ndarray]
Box = Tuple[float, float, float, float]


class NoFaceError(ValueError):
    """No face was found in any frame of a clip."""


def _import_cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError('Face cropping needs OpenCV: pip install "logoformer-timm[video]" '
                          '(opencv-python-headless<5).') from e
    return cv2


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade: frontal faces of at least ``min_face`` times the frame's shorter side.

    Frames are downscaled so their shorter side is at most ``max_short_side`` pixels before detection (speed);
    boxes are returned in the original frame's pixels.
    """

    def __init__(
            self,
            min_face: float = 0.15,
            scale_factor: float = 1.1,
            min_neighbors: int = 5,
            max_short_side: int = 240,
    ):
        cv2 = _import_cv2()
        if not hasattr(cv2, 'CascadeClassifier'):
            raise ImportError(
                f'OpenCV {cv2.__version__} has no Haar cascades (removed in OpenCV 5): '
                f'pip install "opencv-python-headless<5".')
        self._cv2 = cv2
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + 'haarcascade_frontalface_default.xml')
        if self.cascade.empty():
            raise RuntimeError(f'Could not load the Haar cascade from {cv2.data.haarcascades}.')
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.max_short_side = max_short_side

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Boxes ``(N, 4)`` as ``(x1, y1, x2, y2)`` pixels of the faces in an RGB frame."""
        cv2 = self._cv2
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        scale = min(1., self.max_short_side / min(grey.shape))
        if scale < 1.:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        min_size = max(int(self.min_face * min(grey.shape)), 20)
        found = self.cascade.detectMultiScale(
            cv2.equalizeHist(grey), scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size))
        if len(found) == 0:
            return np.zeros((0, 4), dtype=np.float32)
        xywh = np.asarray(found, dtype=np.float32) / scale
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def largest_box(boxes: np.ndarray) -> Optional[Box]:
    """The box with the largest area, or None when there is none."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return tuple(float(v) for v in boxes[int(np.argmax(areas))])


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    iw = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.


def fill_and_smooth_boxes(boxes: Sequence[Optional[Box]], smooth: int = 3) -> List[Box]:
    """Fill missing boxes by linear interpolation (held at the ends), then a centred running median over ``smooth``.

    The median removes single-frame outliers (a wrong detection) without lagging behind real motion.
    """
    found = [i for i, box in enumerate(boxes) if box is not None]
    if not found:
        raise NoFaceError('No box to interpolate from: no frame has a face.')
    if smooth < 1 or smooth % 2 == 0:
        raise ValueError(f'smooth must be an odd window length >= 1, got {smooth}.')
    known = np.asarray([boxes[i] for i in found], dtype=np.float64)
    steps = np.arange(len(boxes))
    filled = np.stack([np.interp(steps, found, known[:, j]) for j in range(4)], axis=1)
    half = smooth // 2
    padded = np.pad(filled, ((half, half), (0, 0)), mode='edge')
    smoothed = np.stack([np.median(padded[i:i + smooth], axis=0) for i in range(len(boxes))])
    return [tuple(float(v) for v in box) for box in smoothed]


def square_box(box: Box, margin: float = 1.25) -> Box:
    """Square box centred on ``box`` with side ``margin`` times its longer side (may extend past the frame)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * margin / 2
    return cx - half, cy - half, cx + half, cy + half


def crop_box(frame: np.ndarray, box: Box, size: Tuple[int, int]) -> np.ndarray:
    """Crop ``box`` from an ``(H, W, 3)`` uint8 frame (black outside the frame) and resize it to ``size`` (H, W).

    Padding instead of clamping keeps the face centred when it is near the frame border.
    """
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f'Empty crop box {box}.')
    crop = np.zeros((y2 - y1, x2 - x1, frame.shape[2]), dtype=frame.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if sx2 > sx1 and sy2 > sy1:
        crop[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = frame[sy1:sy2, sx1:sx2]
    return resize_frame(crop, size)


def resize_frame(frame: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 frame to ``size`` (H, W): area averaging down, bilinear up."""
    if frame.shape[:2] == tuple(size):
        return frame
    cv2 = _import_cv2()
    shrink = size[0] < frame.shape[0] or size[1] < frame.shape[1]
    return cv2.resize(
        np.ascontiguousarray(frame), (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def centre_box(frame_shape: Sequence[int]) -> Box:
    """The largest centred square of a frame of shape ``(H, W, ...)``."""
    height, width = frame_shape[:2]
    side = min(height, width)
    x1, y1 = (width - side) / 2, (height - side) / 2
    return x1, y1, x1 + side, y1 + side


@dataclass
class FaceCrops:
    """Crops of one clip and how they were obtained."""
    crops: np.ndarray  # (T, H, W, 3) uint8 RGB
    boxes: List[Box]  # crop box per frame, frame pixels (may extend past the frame)
    detected: List[bool]  # whether the detector found a face in that frame (False: interpolated / fallback)
    warnings: List[str]


def crop_faces(
        frames: Sequence[np.ndarray],
        size: Union[int, Tuple[int, int]] = 112,
        detector: Optional[FaceDetector] = None,
        boxes: Optional[Sequence[Optional[Box]]] = None,
        margin: float = 1.25,
        smooth: int = 3,
        allow_no_face: bool = False,
        detect: bool = True,
) -> FaceCrops:
    """Face crops ``(T, H, W, 3)`` of a clip's frames.

    Args:
        frames: RGB uint8 frames ``(H, W, 3)`` of one clip.
        size: Crop size (int or (H, W)), normally the model's input size.
        detector: Callable ``frame -> (N, 4) boxes``; default :class:`HaarFaceDetector`.
        boxes: Your own face box per frame (``(x1, y1, x2, y2)`` or None when unknown); skips the detector.
        margin: Square crop side as a multiple of the face box's longer side.
        smooth: Running-median length over frames for the boxes (odd; 1 = no smoothing).
        allow_no_face: With no face in any frame, fall back to a centre crop (with a warning) instead of raising.
        detect: False for frames that already are face crops: each whole frame is resized.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    if not frames:
        raise ValueError('crop_faces needs at least one frame.')
    if not detect:
        return FaceCrops(
            np.stack([resize_frame(f, size) for f in frames]),
            [(0., 0., float(f.shape[1]), float(f.shape[0])) for f in frames], [False] * len(frames), [])
    if boxes is not None:
        if len(boxes) != len(frames):
            raise ValueError(f'Got {len(boxes)} boxes for {len(frames)} frames; pass one box (or None) per frame.')
        face_boxes = [None if b is None else tuple(float(v) for v in b) for b in boxes]
        bad = [b for b in face_boxes if b is not None and (b[2] <= b[0] or b[3] <= b[1])]
        if bad:
            raise ValueError(f'Boxes must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {bad[0]}.')
    else:
        detector = detector or HaarFaceDetector()
        face_boxes = [largest_box(detector(f)) for f in frames]
    detected = [b is not None for b in face_boxes]
    notes = []
    if not any(detected):
        if not allow_no_face:
            raise NoFaceError(
                f'No face found in any of the {len(frames)} sampled frames. Check that the video shows a frontal '
                f'face, pass your own boxes or detector, use --no-detect if the frames already are face crops, '
                f'or --allow-no-face to fall back to a centre crop.')
        notes.append(f'No face found in any of the {len(frames)} sampled frames: used a centre crop instead.')
        crop_boxes = [centre_box(f.shape) for f in frames]
    else:
        crop_boxes = [square_box(b, margin) for b in fill_and_smooth_boxes(face_boxes, smooth)]
        missing = len(frames) - sum(detected)
        if missing:
            what = 'box given' if boxes is not None else 'face found'
            notes.append(f'No {what} in {missing} of {len(frames)} sampled frames: boxes interpolated.')
    for note in notes:
        warnings.warn(note, stacklevel=2)
    crops = np.stack([crop_box(f, b, size) for f, b in zip(frames, crop_boxes)])
    return FaceCrops(crops, crop_boxes, detected, notes)
