"""Faces in video frames: the RetinaFace detector with five landmarks (weights shipped in the package)."""
from .detect import FaceDetections, RetinaFaceDetector, anchor_priors, batched_nms, nms
from .retinaface import RetinaFace, load_retinaface

__all__ = ['FaceDetections', 'RetinaFaceDetector', 'RetinaFace', 'load_retinaface', 'anchor_priors', 'nms',
           'batched_nms']
