"""What ``logoformer-predict`` reports: :class:`VideoPrediction` (per window: :class:`WindowPrediction`), the
JSON Schema of its ``--json`` output, :data:`PREDICTION_SCHEMA`, and its table and throughput lines."""
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .decode import VideoInfo
from .faces import Box

__all__ = ['PREDICTION_SCHEMA', 'VideoPrediction', 'WindowPrediction', 'format_table', 'format_throughput']

_NUMBER = {'type': 'number'}
_PROBABILITY = {'type': 'number', 'minimum': 0, 'maximum': 1}
# JSON Schema (draft 2020-12) of ``logoformer-predict --json`` and of ``VideoPrediction.to_dict()``.
PREDICTION_SCHEMA: Dict[str, Any] = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'logoformer-predict output',
    'type': 'object',
    'required': [
        'video', 'model', 'weights', 'precision', 'weights_cast', 'labels', 'frames_per_clip', 'face_pipeline',
        'windows', 'warnings'],
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
        'model': {'type': 'string', 'description': 'timm model name, with its pretrained tag (name.tag) if it has one'},
        'weights': {'type': 'string', 'description': "'checkpoint:PATH', 'pretrained', 'random-init' or 'user'"},
        'precision': {'enum': ['fp32', 'bf16', 'fp16', 'fp64'], 'description': 'what the model ran in'},
        'weights_cast': {'type': 'boolean', 'description': 'its weights were cast to the precision (bf16)'},
        'labels': {'type': 'array', 'items': {'type': 'string'}, 'minItems': 1},
        'frames_per_clip': {'type': 'integer', 'minimum': 1},
        'face_pipeline': {
            'type': 'object', 'required': ['detector', 'align', 'crop_size', 'margin'], 'additionalProperties': False,
            'description': 'how the crops were made; detector null with --no-detect',
            'properties': {
                'detector': {'type': ['string', 'null']}, 'align': {'type': 'string'},
                'crop_size': {'type': 'integer', 'minimum': 1}, 'margin': {'type': 'number', 'exclusiveMinimum': 0}}},
        'windows': {
            'type': 'array',
            'minItems': 1,
            'description': 'one row per window (with --all-faces: per face track and window)',
            'items': {
                'type': 'object',
                'required': [
                    'start', 'end', 'frame_indices', 'frame_times', 'track', 'faces_found', 'face_status', 'boxes',
                    'alignment', 'transforms', 'no_face', 'probabilities', 'top_k'],
                'additionalProperties': False,
                'properties': {
                    'start': {'type': 'number', 'minimum': 0, 'description': 'seconds'},
                    'end': {'type': 'number', 'minimum': 0, 'description': 'seconds'},
                    'frame_indices': {
                        'type': 'array', 'items': {'type': 'integer', 'minimum': 0},
                        'description': 'sampled frame per clip frame; a protocol with several views: one view after '
                                       'another'},
                    'frame_times': {'type': 'array', 'items': {'type': 'number', 'minimum': 0}},
                    'track': {
                        'type': ['integer', 'null'], 'minimum': 0,
                        'description': "the face track followed: its id over the whole video, its rank by presence x "
                                       "size (0: the video's main face); null: no face track (or --no-detect)"},
                    'faces_found': {
                        'type': 'array', 'items': {'type': 'boolean'},
                        'description': 'per sampled frame: the detector found this face there'},
                    'face_status': {
                        'type': 'array', 'items': {'enum': ['detected', 'interpolated', 'held', 'none']},
                        'description': "per sampled frame: detected; interpolated over a short gap; held (no face: "
                                       "the nearest detection's crop); none (no face track: centre crop)"},
                    'boxes': {
                        'type': 'array',
                        'items': {'oneOf': [{'type': 'array', 'items': _NUMBER, 'minItems': 4, 'maxItems': 4},
                                            {'type': 'null'}]},
                        'description': 'per sampled frame: the face box (x1, y1, x2, y2) in frame pixels, null '
                                       'without a face track'},
                    'alignment': {
                        'type': 'array', 'items': {'enum': ['roll', 'box', 'similarity', 'roll-carried',
                                                            'similarity-carried', 'centre', 'resize']},
                        'description': "per sampled frame: how the crop was aligned ('box' where landmarks were "
                                       "missing or implausible, '...-carried' where they were implausible and the "
                                       "track's neighbouring frames' alignment was carried onto the box)"},
                    'transforms': {
                        'type': 'array',
                        'items': {'type': 'array', 'minItems': 2, 'maxItems': 2,
                                  'items': {'type': 'array', 'items': _NUMBER, 'minItems': 3, 'maxItems': 3}},
                        'description': 'per sampled frame: the 2x3 matrix from frame pixels to crop pixels'},
                    'no_face': {
                        'type': ['string', 'null'],
                        'description': 'why the window has no reliable face (a face in fewer than half of its '
                                       'frames); such a window is not classified unless --allow-no-face'},
                    'probabilities': {
                        'oneOf': [{'type': 'object', 'additionalProperties': _PROBABILITY}, {'type': 'null'}]},
                    'top_k': {
                        'oneOf': [{'type': 'null'}, {
                            'type': 'array',
                            'items': {
                                'type': 'object', 'required': ['label', 'probability'], 'additionalProperties': False,
                                'properties': {'label': {'type': 'string'}, 'probability': _PROBABILITY}}}]},
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
    track: Optional[int]  # video-wide id of the face track followed (0: the main face); None: no track
    face_status: List[str]  # per sampled frame: 'detected', 'interpolated', 'held' or 'none'
    boxes: List[Optional[Box]]  # per sampled frame: the face box in frame pixels (None without a face track)
    alignment: List[str]  # per sampled frame: 'roll', 'box', 'similarity', 'roll-carried', 'similarity-carried',
    # 'centre' or 'resize' (--no-detect)
    transforms: List[List[List[float]]]  # per sampled frame: 2x3 frame-to-crop matrix
    no_face: Optional[str]  # why the window has no reliable face; None when it has one
    probabilities: Optional[Dict[str, float]]  # label -> softmax probability; None: not classified
    top_k: Optional[List[Tuple[str, float]]]

    @property
    def faces_found(self) -> List[bool]:
        """Per sampled frame: the detector found the window's face there."""
        return [s == 'detected' for s in self.face_status]

    @property
    def classified(self) -> bool:
        """Whether the model classified this window."""
        return self.probabilities is not None


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
    face_pipeline: Dict[str, Any] = field(default_factory=dict)  # detector, align, crop_size, margin
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
            row['faces_found'] = w.faces_found
            row['boxes'] = [None if b is None else [float(v) for v in b] for b in w.boxes]
            if w.top_k is not None:
                row['top_k'] = [dict(label=label, probability=p) for label, p in w.top_k]
            windows.append(row)
        return dict(
            video=video, model=self.model, weights=self.weights, precision=self.precision,
            weights_cast=self.weights_cast, labels=list(self.labels),
            frames_per_clip=self.frames_per_clip, face_pipeline=dict(self.face_pipeline), windows=windows,
            warnings=list(self.warnings))


def format_table(result: VideoPrediction) -> str:
    """Human-readable summary: the video, the weights, then one row per window (and face track) with the top-k."""
    v = result.video
    lines = [
        f'{os.path.basename(v.path)}: {v.width}x{v.height}, {v.fps:.2f} fps, {v.num_frames} frames, {v.duration:.2f} s',
        f'model: {result.model} ({result.weights}), {result.frames_per_clip} frames per clip',
    ]
    faces = result.face_pipeline
    if result.face_detection and faces:
        lines.append(f'faces: {faces["detector"]}, {faces["align"]} alignment, {faces["crop_size"]}x'
                     f'{faces["crop_size"]} crops, margin {faces["margin"]}')
    tracks = any(w.track not in (0, None) for w in result.windows)
    k = max((len(w.top_k) for w in result.windows if w.top_k is not None), default=0)
    lines += ['', f'{"start":>7} {"end":>7}  {"faces":>5}  ' + ('track  ' if tracks else '') + f'top-{k}']
    for w in result.windows:
        found = f'{sum(w.faces_found)}/{len(w.faces_found)}' if result.face_detection else '-'
        track = f'{"-" if w.track is None else w.track:>5}  ' if tracks else ''
        if w.top_k is None:
            top = f'not classified: {w.no_face}'
        else:
            top = '  '.join(f'{label} {p:.2f}' for label, p in w.top_k)
        lines.append(f'{w.start:>6.2f}s {w.end:>6.2f}s  {found:>5}  {track}{top}')
    lines += [f'warning: {note}' for note in result.warnings]
    return '\n'.join(lines)


def format_throughput(result: VideoPrediction) -> str:
    """One line: clips per second and the shares of time spent decoding, detecting faces and in the model."""
    t = result.timing
    total = t['total']
    other = total - t['decode'] - t['faces'] - t['model']
    shares = ', '.join(f'{label} {100 * seconds / total:.1f} %' for label, seconds in (
        ('decoding', t['decode']), ('face detection and cropping', t['faces']), ('model', t['model']),
        ('other', other)))
    n = len(result.windows)
    return (f'throughput: {n / total:.3g} clips/s ({n} clip{"s" * (n != 1)} in {total:.2f} s); {shares}; '
            f'first model batch {t.get("first_batch", 0.):.2f} s')
