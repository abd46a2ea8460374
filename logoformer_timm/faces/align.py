"""Face alignment: from a face's box and 5 landmarks to one affine warp of the frame into a square crop.

Every mode reduces a face to a :class:`FaceGeometry`: the frame point that becomes the crop's centre, the crop's
side in frame pixels and its roll angle. The frame-to-crop matrix follows from it, and tracks
(:mod:`logoformer_timm.faces.tracks`) interpolate and smooth these four numbers, never pixels.

- ``'roll'`` (default): rotate so the eye line is level (roll clamped to :data:`MAX_ROLL_DEGREES`), centre on the
  box, side = the box's longer side x ``margin``. Rotating in the image plane keeps the face's shape, as MAFW's
  "matrix rotation" does.
- ``'box'``: no rotation, the box's centre and longer side x ``margin`` (the geometry of the Haar pipeline).
- ``'similarity'``: the least-squares similarity of the 5 landmarks to :data:`SIMILARITY_TEMPLATE` (a tighter
  crop: the whole face fills it); distorts profile faces more than a roll does.

Landmarks that cannot be a face seen from the front or a moderate angle (:func:`plausible_landmarks`: a profile,
a landmark far outside the box) make that frame fall back to ``'box'``, and its ``mode`` says so (a track then
carries its neighbouring frames' alignment onto that box: :mod:`logoformer_timm.faces.tracks`).

Coordinates are continuous pixels: pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``. The warp is PIL's affine
transform (bilinear), after a box-filter reduction of the face's region when the crop shrinks it by 2x or more, so
a face in a 4K frame is not aliased; no OpenCV.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

__all__ = [
    'ALIGN_MODES', 'DEFAULT_MARGIN', 'MAX_ROLL_DEGREES', 'SIMILARITY_TEMPLATE', 'FaceGeometry', 'geometry_from_box',
    'roll_angle', 'plausible_landmarks', 'align_face', 'similarity_geometry', 'crop_matrix', 'warp_crop',
    'resize_frame', 'transform_points', 'face_crop_size']

ALIGN_MODES = ('roll', 'box', 'similarity')
# Crop side / face box side. An estimate: RetinaFace's box runs from the brows to the chin, and DFEW's and MAFW's
# published crops show the whole head with little background; a user with the data can check it (docs/prediction.md).
DEFAULT_MARGIN = 1.25
MAX_ROLL_DEGREES = 45.  # a roll beyond this is more likely wrong landmarks than a tilted head: clamp
# Fractions of the crop side: OpenFace 2's -simalign 5 points at its scale 0.7 (eyes, nose, mouth corners; image
# left first), the tool the MAE-DFER authors name for clips without official crops. The whole face fills the crop:
# on single_face.mp4 its side is about 0.6 of the roll crop's at DEFAULT_MARGIN. Used as is at DEFAULT_MARGIN; another
# margin scales the crop side by margin / DEFAULT_MARGIN.
SIMILARITY_TEMPLATE = np.array([
    [32.95, 29.20], [78.95, 28.86], [56.86, 50.11], [35.76, 76.03], [76.16, 75.66]]) / 112.


@dataclass(frozen=True)
class FaceGeometry:
    """Where a square crop sits in a frame: its centre, its side (frame pixels) and its roll (radians)."""
    cx: float
    cy: float
    side: float
    angle: float = 0.
    mode: str = 'box'  # the alignment that gave it: 'roll', 'box' or 'similarity'

    def as_array(self) -> np.ndarray:
        """``(cx, cy, log side, angle)``: the parameters tracks interpolate and smooth."""
        return np.array([self.cx, self.cy, math.log(self.side), self.angle])

    @classmethod
    def from_array(cls, values: Sequence[float], mode: str) -> 'FaceGeometry':
        """Inverse of :meth:`as_array`."""
        cx, cy, log_side, angle = (float(v) for v in values)
        return cls(cx, cy, math.exp(log_side), angle, mode)


def geometry_from_box(box: Sequence[float], margin: float = DEFAULT_MARGIN, angle: float = 0.,
                      mode: str = 'box') -> FaceGeometry:
    """The box's centre, its longer side x ``margin``, and ``angle``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f'A face box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {tuple(box)}.')
    return FaceGeometry((x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * margin, angle, mode)


def roll_angle(landmarks: np.ndarray) -> float:
    """Angle (radians, clockwise on screen as y points down) of the line from the image-left to the image-right eye."""
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    return math.atan2(ry - ly, rx - lx)


def plausible_landmarks(box: Sequence[float], landmarks: np.ndarray) -> bool:
    """Whether 5 landmarks can be a face seen from the front or a moderate angle, in its box.

    Checked in the face's own upright frame (the eye line levelled): the eyes are apart by 15-80 % of the box's
    width and the left one is left; the nose lies between the eyes' x (a profile puts it outside) and below them;
    the mouth corners lie below the nose; every point lies within the box grown by a quarter of its size.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2) or not np.isfinite(landmarks).all():
        return False
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    pad_x, pad_y = w / 4, h / 4
    inside = ((landmarks[:, 0] >= x1 - pad_x) & (landmarks[:, 0] <= x2 + pad_x)
              & (landmarks[:, 1] >= y1 - pad_y) & (landmarks[:, 1] <= y2 + pad_y))
    if not inside.all():
        return False
    angle = roll_angle(landmarks)
    if abs(angle) > math.pi / 2:  # the eyes swapped: upside down or wrong
        return False
    c, s = math.cos(-angle), math.sin(-angle)
    upright = (landmarks - landmarks[:2].mean(0)) @ np.array([[c, s], [-s, c]])  # rotate by -angle
    eyes, nose, mouth = upright[:2], upright[2], upright[3:]
    interocular = eyes[1, 0] - eyes[0, 0]
    return bool(0.15 * w <= interocular <= 0.8 * w and eyes[0, 0] < nose[0] < eyes[1, 0] and nose[1] > 0
                and (mouth[:, 1] > nose[1]).all())


def similarity_geometry(landmarks: np.ndarray, margin: float = DEFAULT_MARGIN) -> FaceGeometry:
    """The least-squares similarity (Umeyama) of 5 landmarks onto :data:`SIMILARITY_TEMPLATE`, as a geometry.

    The template's fractions hold at :data:`DEFAULT_MARGIN`; another ``margin`` scales the crop's side with it.
    """
    src = np.asarray(landmarks, dtype=np.float64)
    dst = SIMILARITY_TEMPLATE - 0.5  # crop fractions about the crop's centre
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    a, b = src - src_mean, dst - dst_mean
    # similarity z -> k e^{i phi} z in complex form: k e^{i phi} = sum(conj(a) b) / sum(|a|^2)
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    ratio = np.sum(np.conj(za) * zb) / np.sum(np.abs(za) ** 2)
    scale, phi = abs(ratio), float(np.angle(ratio))  # frame pixels -> crop fractions, rotation frame -> crop
    # frame point that maps to the crop's centre (fraction 0): src_mean + R(-phi) (0 - dst_mean) / scale
    c, s = math.cos(-phi), math.sin(-phi)
    offset = -dst_mean / scale
    centre = src_mean + np.array([c * offset[0] - s * offset[1], s * offset[0] + c * offset[1]])
    return FaceGeometry(float(centre[0]), float(centre[1]), margin / DEFAULT_MARGIN / scale, -phi, 'similarity')


def align_face(box: Sequence[float], landmarks: Optional[np.ndarray], mode: str = 'roll',
               margin: float = DEFAULT_MARGIN) -> FaceGeometry:
    """The crop geometry of one detected face; implausible or missing landmarks fall back to ``'box'``."""
    if mode not in ALIGN_MODES:
        raise ValueError(f'Unknown face alignment {mode!r}; choose one of {", ".join(ALIGN_MODES)}.')
    if mode == 'box' or landmarks is None or not plausible_landmarks(box, landmarks):
        return geometry_from_box(box, margin)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if mode == 'similarity':
        return similarity_geometry(landmarks, margin)
    limit = math.radians(MAX_ROLL_DEGREES)
    return geometry_from_box(box, margin, min(max(roll_angle(landmarks), -limit), limit), 'roll')


def crop_matrix(geometry: FaceGeometry, size: int) -> np.ndarray:
    """The ``(2, 3)`` matrix taking frame pixels to crop pixels: ``crop = M[:, :2] @ frame + M[:, 2]``.

    The crop's centre ``(size / 2, size / 2)`` is the geometry's centre; a frame vector along ``angle`` becomes
    horizontal; ``side`` frame pixels become ``size`` crop pixels.
    """
    k = size / geometry.side
    c, s = math.cos(geometry.angle), math.sin(geometry.angle)
    linear = k * np.array([[c, s], [-s, c]])  # rotation by -angle, then scale
    shift = size / 2 - linear @ np.array([geometry.cx, geometry.cy])
    return np.concatenate([linear, shift[:, None]], axis=1)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points ``(..., 2)`` mapped by a ``(2, 3)`` affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``(size, size, 3)`` uint8 crop of an ``(H, W, 3)`` uint8 frame under ``matrix`` (black outside the frame).

    One bilinear affine warp; when the crop shrinks the face by ``k >= 2``, the region it covers is first reduced
    by ``k`` with a box filter (no aliasing).
    """
    inverse = np.linalg.inv(np.concatenate([matrix, [[0., 0., 1.]]]))[:2]  # crop pixels -> frame pixels
    corners = transform_points(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64))
    height, width = frame.shape[:2]
    left, top = (max(0, int(math.floor(v)) - 1) for v in corners.min(0))
    right = min(width, int(math.ceil(corners[:, 0].max())) + 1)
    bottom = min(height, int(math.ceil(corners[:, 1].max())) + 1)
    if right <= left or bottom <= top:  # the crop lies wholly outside the frame
        return np.zeros((size, size, 3), dtype=np.uint8)
    region = Image.fromarray(np.ascontiguousarray(frame[top:bottom, left:right]))
    factor = int(math.sqrt(abs(np.linalg.det(inverse[:, :2]))))  # frame pixels per crop pixel
    if factor >= 2:
        region = region.reduce(factor)
    else:
        factor = 1
    # region pixels = (frame pixels - (left, top)) / factor; PIL's data maps output (x, y) to input coordinates
    to_region = np.array([[1 / factor, 0, -left / factor], [0, 1 / factor, -top / factor], [0, 0, 1]])
    data = (to_region @ np.concatenate([inverse, [[0., 0., 1.]]]))[:2].ravel()
    warped = region.transform((size, size), Image.Transform.AFFINE, data=tuple(data),
                              resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(warped)


def resize_frame(frame: np.ndarray, size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 frame resized to ``size`` (int or (H, W)) with PIL's antialiased bilinear filter."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if frame.shape[:2] == size:
        return frame
    image = Image.fromarray(np.ascontiguousarray(frame))
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


# (test protocol name or tag prefix) -> side of the dataset's face crops that the zoo's checkpoints were trained on
_DATASET_CROP_SIZES = (('mae_dfer_dfew', 256), ('dfew', 224), ('mafw', 224), ('ferv39k', 224))


def face_crop_size(pretrained_cfg: Optional[dict], input_size: Tuple[int, int]) -> int:
    """Side of the crops before a model's own resize: the face crops its training set was made of.

    DFEW's and MAFW's crops are 224 (their READMEs); MAE-DFER reads DFEW's as 256 (its issue 17); FERV39K's size is
    not published and 224 is assumed. A model with no dataset in its cfg (LOGO-Former, your own) gets crops at its
    input size: one warp, no second resample.
    """
    cfg = pretrained_cfg or {}
    protocol = cfg.get('test_protocol')
    if isinstance(protocol, dict):
        protocol = protocol.get('name')
    protocol = protocol if isinstance(protocol, str) else getattr(protocol, 'name', '')
    tag = str(cfg.get('tag') or '')
    for key, size in _DATASET_CROP_SIZES:
        if protocol == key or (key != 'mae_dfer_dfew' and tag.startswith(key)):
            return size
    return max(input_size)
