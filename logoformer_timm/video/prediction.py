"""What ``logoformer-predict`` reports: :class:`VideoPrediction` (per window: :class:`WindowPrediction`) and the
JSON Schema of its ``--json`` output, :data:`PREDICTION_SCHEMA`."""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Tuple

from .decode import VideoInfo
from .faces import Box

__all__ = ['PREDICTION_SCHEMA', 'VideoPrediction', 'WindowPrediction']

_NUMBER = {'type': 'number'}
_PROBABILITY = {'type': 'number', 'minimum': 0, 'maximum': 1}
# JSON Schema (draft 2020-12) of ``logoformer-predict --json`` and of ``VideoPrediction.to_dict()``.
PREDICTION_SCHEMA: Dict[str, Any] = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'logoformer-predict output',
    'type': 'object',
    'required': [
        'video', 'model', 'weights', 'precision', 'weights_cast', 'labels', 'frames_per_clip', 'windows', 'warnings'],
    'additionalProperties': False,
    'properties': {
        'video': {
            'type': 'object',
            'required': ['path', 'width', 'height', 'fps', 'num_frames', 'duration', 'codec'],
            'additionalProperties': False,
            'properties': {
                'path': {'type': 'string'},
                'width': {'type': 'integer', 'minimum': 1},
                'height': {'type': 'integer', 'minimum': 1},
                'fps': {'type': 'number', 'exclusiveMinimum': 0},
                'num_frames': {'type': 'integer', 'minimum': 1},
                'duration': {'type': 'number', 'exclusiveMinimum': 0},
                'codec': {'type': 'string'},
            },
        },
        'model': {'type': 'string', 'description': 'timm model name'},
        'weights': {'type': 'string', 'description': "'checkpoint:PATH', 'pretrained', 'random-init' or 'user'"},
        'precision': {'enum': ['fp32', 'bf16', 'fp16', 'fp64'], 'description': 'what the model ran in'},
        'weights_cast': {'type': 'boolean', 'description': 'its weights were cast to the precision (bf16)'},
        'labels': {'type': 'array', 'items': {'type': 'string'}, 'minItems': 1},
        'frames_per_clip': {'type': 'integer', 'minimum': 1},
        'windows': {
            'type': 'array',
            'minItems': 1,
            'items': {
                'type': 'object',
                'required': [
                    'start', 'end', 'frame_indices', 'frame_times', 'faces_found', 'boxes', 'probabilities', 'top_k'],
                'additionalProperties': False,
                'properties': {
                    'start': {'type': 'number', 'minimum': 0, 'description': 'seconds'},
                    'end': {'type': 'number', 'minimum': 0, 'description': 'seconds'},
                    'frame_indices': {
                        'type': 'array', 'items': {'type': 'integer', 'minimum': 0},
                        'description': 'sampled frame per clip frame; a protocol with several views: one view after '
                                       'another'},
                    'frame_times': {'type': 'array', 'items': {'type': 'number', 'minimum': 0}},
                    'faces_found': {
                        'type': 'array', 'items': {'type': 'boolean'},
                        'description': 'per sampled frame: the detector found a face (else interpolated/fallback)'},
                    'boxes': {
                        'type': 'array', 'items': {'type': 'array', 'items': _NUMBER, 'minItems': 4, 'maxItems': 4},
                        'description': 'per sampled frame: crop box (x1, y1, x2, y2) in frame pixels'},
                    'probabilities': {'type': 'object', 'additionalProperties': _PROBABILITY},
                    'top_k': {
                        'type': 'array',
                        'items': {
                            'type': 'object', 'required': ['label', 'probability'], 'additionalProperties': False,
                            'properties': {'label': {'type': 'string'}, 'probability': _PROBABILITY}}},
                },
            },
        },
        'warnings': {'type': 'array', 'items': {'type': 'string'}},
    },
}


@dataclass
class WindowPrediction:
    """Prediction for one clip of the video (the whole video, or one sliding window)."""
    start: float  # seconds
    end: float  # seconds
    frame_indices: List[int]  # sampled frame per clip frame (repeats for short videos; several views one after another)
    frame_times: List[float]  # seconds
    faces_found: List[bool]  # per sampled frame: the detector found a face there
    boxes: List[Box]  # per sampled frame: the crop box in frame pixels
    probabilities: Dict[str, float]  # label -> softmax probability
    top_k: List[Tuple[str, float]]


@dataclass
class VideoPrediction:
    """Result of :func:`predict_video`; ``to_dict()`` follows :data:`PREDICTION_SCHEMA`."""
    video: VideoInfo
    model: str
    weights: str
    labels: List[str]
    frames_per_clip: int
    windows: List[WindowPrediction]
    warnings: List[str] = field(default_factory=list)
    face_detection: bool = True  # False with detect=False (--no-detect): faces_found says nothing then
    # seconds: total, decode, faces (detection and cropping), model (all batches), first_batch; not in to_dict()
    timing: Dict[str, float] = field(default_factory=dict)
    precision: str = 'fp32'  # what the model ran in (weights.inference.precision_of)
    weights_cast: bool = False  # its weights were cast to that precision (bf16), not run under autocast

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict, the ``--json`` output."""
        video = {k: v for k, v in asdict(self.video).items() if k != 'frame_times'}
        windows = []
        for w in self.windows:
            row = asdict(w)
            row['boxes'] = [list(b) for b in w.boxes]
            row['top_k'] = [dict(label=label, probability=p) for label, p in w.top_k]
            windows.append(row)
        return dict(
            video=video, model=self.model, weights=self.weights, precision=self.precision,
            weights_cast=self.weights_cast, labels=list(self.labels),
            frames_per_clip=self.frames_per_clip, windows=windows, warnings=list(self.warnings))
