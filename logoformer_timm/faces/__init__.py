"""Faces in video frames: the RetinaFace detector with five landmarks (weights shipped in the package), alignment,
tracks over a clip, and the pipeline from frames to the crops a model sees (:class:`FacePipeline`)."""
from .align import ALIGN_MODES, DEFAULT_MARGIN, FaceGeometry, align_face, crop_matrix, face_crop_size, warp_crop
from .detect import FaceDetections, RetinaFaceDetector, anchor_priors, batched_nms, nms
from .pipeline import DETECTORS, FaceCrops, FacePipeline, NoFaceError, crop_landmarks
from .retinaface import RetinaFace, load_retinaface
from .tracks import Detection, FaceTrack, TrackFrame, build_tracks

__all__ = ['FaceDetections', 'RetinaFaceDetector', 'RetinaFace', 'load_retinaface', 'anchor_priors', 'nms',
           'batched_nms', 'FacePipeline', 'FaceCrops', 'NoFaceError', 'DETECTORS', 'crop_landmarks', 'ALIGN_MODES',
           'DEFAULT_MARGIN', 'FaceGeometry', 'align_face', 'crop_matrix', 'face_crop_size', 'warp_crop', 'Detection',
           'FaceTrack', 'TrackFrame', 'build_tracks']
