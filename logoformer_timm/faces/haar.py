"""OpenCV's frontal-face Haar cascade, the optional ``--face-detector haar``: boxes only, no landmarks.

Kept as a baseline beside RetinaFace (benchmarks/faces.py measures both in one run) and for machines where a
user already has OpenCV. It needs ``opencv-python-headless<5`` (OpenCV 5 dropped the cascades): the ``haar``
extra. Frontal faces only: it misses rolled faces and profiles, and gives no landmarks, so its crops use the
``box`` alignment.
"""
import numpy as np

__all__ = ['HaarFaceDetector']


def _import_cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError('The Haar face detector needs OpenCV: pip install "logoformer-timm[haar]" '
                          '(opencv-python-headless<5), or use the default --face-detector retinaface.') from e
    if not hasattr(cv2, 'CascadeClassifier'):
        raise ImportError(f'OpenCV {cv2.__version__} has no Haar cascades (removed in OpenCV 5): '
                          f'pip install "opencv-python-headless<5".')
    return cv2


class HaarFaceDetector:
    """Frontal faces of at least ``min_face`` times the frame's shorter side, as ``(N, 4)`` boxes per frame.

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
