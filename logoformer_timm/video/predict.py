"""``logoformer-predict VIDEO``: facial expression of the face in a video, per clip or as a timeline of windows.

Pipeline: stream the video (:mod:`logoformer_timm.video.decode`), sample the model's frames uniformly over the clip
(or over each ``--window`` seconds every ``--stride`` seconds), find, align and crop the face along its track
(:mod:`logoformer_timm.faces`, per window :mod:`logoformer_timm.video.faces`), run the model, report probabilities
per label. A window with a face in fewer than half of its frames is reported, not classified. A zoo tag samples each window
and merges its views by its authors' test protocol (``logoformer_timm.data.protocol``), and the result's warnings
say in one line what differs from their evaluation (the face crops, the video decode). Crops are made at the
side of the face crops the model was trained on (:func:`~logoformer_timm.faces.face_crop_size`) and resized by the
model's own transform.

Python: :func:`load_clip` gives the ``(C, T, H, W)`` tensor a model takes, :func:`predict_video` a
:class:`VideoPrediction`. Needs the ``video`` extra.
"""
import argparse
import json
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from ..cli import (
    ArgumentParser, add_extra_weight_args, extra_weight_files, non_negative_int, positive_float, positive_int,
    run_cli)
from ..data import ClipTransform, merge_views, resolve_video_data_config
from ..layers import check_finite_pixels
from ..weights.inference import PRECISIONS, precision_of
from ..weights.loading import check_clip_model, label_names, load_model
from .decode import PathLike, VideoInfo, iter_clips, probe_video, sliding_windows, timed_clips, uniform_indices
from ..faces.align import ALIGN_MODES, DEFAULT_MARGIN, face_crop_size
from ..faces.pipeline import DETECTORS, FaceCrops, FacePipeline, NoFaceError, resize_frames
from .decode import window_indices
from .faces import Box, FaceDetector, WindowFaces, iter_windows
from .prediction import PREDICTION_SCHEMA, VideoPrediction, WindowPrediction, format_table, format_throughput

__all__ = [
    'load_clip', 'clip_from_frames', 'predict_video', 'load_model', 'VideoPrediction', 'WindowPrediction',
    'PREDICTION_SCHEMA', 'NoFaceError', 'format_table', 'format_throughput', 'main']

MAX_MARGIN = 10.  # crop side / face box side; more is the whole frame for any face worth classifying
RANDOM_INIT_WARNING = 'The model is randomly initialised (--random-init): these predictions are meaningless.'
NO_FACE_ADVICE = ('Check that the video shows a face, pass your own boxes or detector, use --no-detect if the frames '
                  'already are face crops, or --allow-no-face to classify the crops anyway.')


def _clip_tensor(crops: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 crops to a float ``(C, T, H, W)`` clip in [0, 1]."""
    return rearrange(torch.from_numpy(crops), 't h w c -> c t h w').float().div_(255.)


def clip_from_frames(
        frames: Sequence[np.ndarray],
        num_frames: int = 16,
        size: Union[int, Tuple[int, int]] = 112,
) -> torch.Tensor:
    """Face crops you made yourself (``(H, W, 3)`` uint8 RGB each) to a ``(C, T, H, W)`` clip in [0, 1].

    ``num_frames`` are sampled uniformly (repeating frames of short sequences) and resized to ``size``.
    """
    if not len(frames):
        raise ValueError('clip_from_frames needs at least one frame.')
    picked = [frames[i] for i in uniform_indices(len(frames), num_frames)]
    return _clip_tensor(resize_frames(picked, size))


def _clip_plan(info: VideoInfo, num_frames: int, start: Optional[float], end: Optional[float]) -> List[int]:
    start = 0. if start is None else start
    end = info.duration if end is None else end
    if not 0 <= start < end:
        raise ValueError(f'Need 0 <= start < end, got start={start} and end={end} seconds.')
    if start >= info.duration:
        raise ValueError(f'start={start} s is past the end of the video ({info.duration:.2f} s).')
    frames = window_indices(info, start, end)
    return uniform_indices(len(frames), num_frames, start=frames.start)


def _protocol_plan(info: VideoInfo, protocol, start: float, end: float) -> List[List[int]]:
    """The frames of every temporal view of the window ``[start, end)`` by a test protocol's sampler."""
    frames = window_indices(info, start, end)
    return [[frames.start + i for i in view] for view in protocol.view_indices(len(frames))]


def _protocol_note(protocol, detect: bool) -> str:
    """One line: what a prediction by a zoo tag's protocol does differently from its authors' evaluation, and why."""
    views = ('its one view used' if protocol.num_views == 1 else
             f'its {protocol.num_views} views merged ({protocol.merge.replace("_", " ")})')
    done = f'{protocol.name}: each window\'s frames are sampled and {views} as the authors\' evaluation does'
    if detect:
        return (done + '; but the faces are detected, aligned and cropped here, where the authors evaluated the '
                       'datasets\' own face crops (a video holds whole frames)')
    return done + ('; the frames are decoded from the video, where the authors read JPEG frames (the pixels differ '
                   'by the video codec)')


def _face_notes(faces: FaceCrops, align: str, where: str) -> List[str]:
    """Per-window warnings: frames without the face, frames whose landmarks fell back to the box."""
    notes, n = [], len(faces.status)
    held = faces.status.count('held')
    if faces.reliable and held:
        notes.append(f'{where}no face in {held} of {n} sampled frames: the nearest detection\'s crop is used there.')
    detected = [a for a, s, p in zip(faces.alignment, faces.status, faces.landmarks)
                if s == 'detected' and p is not None]
    fallback = 0 if align == 'box' else detected.count('box')
    carried = sum(a.endswith('-carried') for a in detected)
    ways = [f'by the box in {fallback}'] * bool(fallback)
    ways += [f'by the neighbouring frames\' landmarks in {carried}'] * bool(carried)
    if ways:
        notes.append(f'{where}implausible landmarks (a profile?) in {fallback + carried} of {n} sampled frames: '
                     f'aligned {" and ".join(ways)}.')
    return notes


def load_clip(
        path: PathLike,
        num_frames: int = 16,
        size: int = 112,
        start: Optional[float] = None,
        end: Optional[float] = None,
        detector: FaceDetector = 'retinaface',
        boxes: Optional[Sequence[Optional[Box]]] = None,
        margin: float = DEFAULT_MARGIN,
        detect: bool = True,
        allow_no_face: bool = False,
        align: str = 'roll',
        face: int = 0,
) -> torch.Tensor:
    """Face clip ``(C, T, H, W)``, float RGB in [0, 1], of ``num_frames`` frames sampled uniformly from a video.

    Args:
        path: Video file.
        num_frames: Frames to sample uniformly over ``[start, end)`` (short videos repeat frames).
        size: Crop side in pixels.
        start: Clip start in seconds (default: the first frame).
        end: Clip end in seconds (default: the end of the video).
        detector: ``'retinaface'`` (default), ``'haar'``, or your callable ``frame -> (N, 4) boxes``.
        boxes: Your own face boxes, one ``(x1, y1, x2, y2)`` (or None) per video frame; skips detection.
        margin: Square crop side as a multiple of the face box's longer side.
        detect: False when the video already shows face crops: frames are only resized.
        allow_no_face: Crops anyway (centre crops without any face) instead of raising :class:`NoFaceError` when
            the clip has a face in fewer than half of its frames.
        align: ``'roll'``, ``'box'`` or ``'similarity'`` (:mod:`logoformer_timm.faces.align`).
        face: Which face track of the clip (0: the main face by presence x size).
    """
    info = probe_video(path)
    indices = _clip_plan(info, num_frames, start, end)
    (_, frames), = iter_clips(path, [indices])
    if not detect:
        return _clip_tensor(resize_frames(frames, size))
    pipeline = FacePipeline(detector, align, size=size, margin=margin)
    (faces,) = WindowFaces(pipeline, info, boxes)(frames, indices, (face,))
    if not faces.reliable and not allow_no_face:
        raise NoFaceError(f'No reliable face in the clip: {faces.reason}. {NO_FACE_ADVICE}')
    return _clip_tensor(faces.crops)


def check_save_crops(directory: Optional[str]) -> None:
    """A ``--save-crops`` folder must be new or empty: crops are never overwritten or mixed with another run's."""
    if directory and os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f'--save-crops {directory} is a file; pass a new or empty folder for the crops.')
    if directory and os.path.isdir(directory) and os.listdir(directory):
        raise ValueError(f'--save-crops {directory} is not empty; pass a new or empty folder (crops are never '
                         f'overwritten or mixed with another run\'s).')


def _save_crops(folder: str, indices: Sequence[int], crops: np.ndarray) -> None:
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for k, (index, crop) in enumerate(zip(indices, crops)):
        Image.fromarray(crop).save(os.path.join(folder, f'{k:02d}_frame{index:06d}.png'))


def _row(start: float, end: float, indices: Sequence[int], info: VideoInfo, faces: Optional[FaceCrops],
         probs: Optional[torch.Tensor], labels: Sequence[str], top_k: int, reason: Optional[str]) -> WindowPrediction:
    n = len(indices)
    if faces is None:  # --no-detect: whole frames resized
        face = dict(track=None, face_status=['none'] * n, boxes=[None] * n, alignment=['resize'] * n, transforms=[])
    else:
        face = dict(track=faces.track_id, face_status=list(faces.status),
                    boxes=[None if b is None else tuple(float(v) for v in b) for b in faces.boxes],
                    alignment=list(faces.alignment), transforms=[m.tolist() for m in faces.transforms])
    scores = top = None
    if probs is not None:
        scores = {label: float(v) for label, v in zip(labels, probs)}
        top = [(labels[i], float(probs[i])) for i in probs.argsort(descending=True)[:top_k].tolist()]
    return WindowPrediction(start=float(start), end=float(end), frame_indices=list(indices),
                            frame_times=[info.frame_times[i] for i in indices], no_face=reason,
                            probabilities=scores, top_k=top, **face)


@torch.inference_mode()
def predict_video(
        path: PathLike,
        model: nn.Module,
        window: Optional[float] = None,
        stride: Optional[float] = None,
        top_k: int = 3,
        detector: FaceDetector = 'retinaface',
        boxes: Optional[Sequence[Optional[Box]]] = None,
        margin: float = DEFAULT_MARGIN,
        detect: bool = True,
        allow_no_face: bool = False,
        save_crops: Optional[str] = None,
        weights: str = 'user',
        batch_size: int = 8,
        align: str = 'roll',
        face: int = 0,
        all_faces: bool = False,
) -> VideoPrediction:
    """Expression probabilities for a face in a video: one clip over the whole video, or sliding windows.

    Args:
        path: Video file.
        model: A clip model (any model with ``in_chans``, ``num_frames``, ``img_size``, ``input_layout``).
        window: Window length in seconds for a timeline (default: one clip over the whole video).
        stride: Window step in seconds (default: ``window``).
        top_k: Labels to list per window, most probable first.
        detector, boxes, margin, detect, align: As in :func:`load_clip`.
        face: Which face track of the video (0: its main face by presence x size; the same face in every window).
        allow_no_face: Classify a window without a reliable face anyway (its track's crops, or centre crops).
        save_crops: New or empty folder to write the crops the model saw (``window_NNN/KK_frameFFFFFF.png``;
            with ``all_faces`` one folder per track: ``window_NNN/track_TT/...``).
        weights: Where the weights came from, recorded in the result.
        batch_size: Clips per forward pass.
        all_faces: A row per face track and window, for the tracks with a face in the window (``face`` is then
            ignored).

    Raises :class:`NoFaceError` when no window has a reliable face (a face in at least half of its frames) and
    ``allow_no_face`` is False.
    """
    check_clip_model(model)
    check_save_crops(save_crops)
    info = probe_video(path)
    if window is None:
        if stride is not None:
            raise ValueError('stride needs a window: pass window=SECONDS as well.')
        spans = [(0., info.duration)]
    else:
        spans = sliding_windows(info.duration, window, window if stride is None else stride)
    num_frames = model.num_frames
    config = resolve_video_data_config(model)
    protocol = config['test_protocol']
    if protocol is not None and protocol.authors:  # a zoo tag: its authors' sampling, views and merge
        views = [_protocol_plan(info, protocol, s, e) for s, e in spans]
        notes = [_protocol_note(protocol, detect)]
    else:  # LOGO-Former: one clip of uniformly sampled frames
        views = [[_clip_plan(info, num_frames, s, e)] for s, e in spans]
        notes, protocol = [], None
    plans = [[i for view in window_views for i in view] for window_views in views]
    transform = ClipTransform(**config)  # the protocol's resize (PIL for a zoo tag), scaling and mean / std
    merge = protocol.merge if protocol is not None else 'logit_mean'
    labels = label_names(model)
    top_k = max(1, min(top_k, len(labels)))
    device = next(model.parameters()).device
    crop_size = face_crop_size(getattr(model, 'pretrained_cfg', None), tuple(model.img_size))
    pipeline = FacePipeline(detector, align, size=crop_size, margin=margin, device=str(device)) if detect else None
    window_faces = WindowFaces(pipeline, info, boxes) if detect else None
    was_training = model.training
    model.eval()

    rows, probs_by_row, pending = [], {}, []  # rows: (window, faces or None, reason)
    boxes_only = 0  # detected frames without landmarks
    timing = dict(decode=0., faces=0., model=0.)
    started = time.perf_counter()

    def run(batch):
        tic = time.perf_counter()
        clips = torch.stack([c for _, c in batch])  # (B, V, ...)
        check_finite_pixels(clips)
        logits = model(clips.flatten(0, 1).to(device)).float().cpu()  # .cpu() waits for the device
        probs = merge_views(logits.reshape(*clips.shape[:2], -1), merge).float()
        for (row, _), p in zip(batch, probs):
            probs_by_row[row] = p
        timing.setdefault('first_batch', time.perf_counter() - tic)
        timing['model'] += time.perf_counter() - tic

    try:
        # with faces: every window detected first, so that the tracks (and their ids) are the video's
        windows = (iter_windows(path, plans, window_faces, timing) if detect else
                   timed_clips(iter_clips(path, plans), timing))
        for number, frames in windows:
            tic = time.perf_counter()
            where = f'window {spans[number][0]:.2f}-{spans[number][1]:.2f} s: ' if window is not None else ''
            if detect:
                found = window_faces(frames, plans[number], None if all_faces else (face,))
                if all_faces:  # every reliable track present, or one to report why there is none
                    found = [f for f in found if f.reliable] or found[:1]
            timing['faces'] += time.perf_counter() - tic
            for faces in (found if detect else [None]):
                reason = None if faces is None or faces.reliable else faces.reason
                rows.append((number, faces, reason))
                if faces is not None:
                    notes.extend(_face_notes(faces, align, where))
                    boxes_only += sum(s == 'detected' and p is None for s, p in zip(faces.status, faces.landmarks))
                if reason is not None and not allow_no_face:
                    continue
                if reason is not None:
                    notes.append(f'{where}no reliable face ({reason}): classified anyway (--allow-no-face).')
                if save_crops and faces is not None:
                    folder = os.path.join(save_crops, f'window_{number:03d}')
                    if all_faces:
                        folder = os.path.join(folder, f'track_{faces.track_id or 0:02d}')
                    _save_crops(folder, plans[number], faces.crops)
                # whole face frames reach the protocol's resize as they are, as the authors' frames do
                pixels = faces.crops if faces is not None else (
                    np.stack(frames) if protocol is not None else resize_frames(frames, tuple(model.img_size)))
                pixels = rearrange(torch.from_numpy(pixels), '(v t) h w c -> v t c h w', v=len(views[number]))
                pending.append((len(rows) - 1, torch.stack([transform(view) for view in pixels])))
                if len(pending) == batch_size:
                    run(pending)
                    pending = []
        if pending:
            run(pending)
    finally:
        model.train(was_training)
    timing['total'] = time.perf_counter() - started
    if not probs_by_row:  # only without allow_no_face: every window has no reliable face
        reasons = sorted({reason for _, _, reason in rows})
        raise NoFaceError(f'No reliable face in any of the {len(spans)} window(s) (a face in at least half of the '
                          f'sampled frames): {"; ".join(reasons)}. {NO_FACE_ADVICE}')

    order = sorted(range(len(rows)), key=lambda k: (rows[k][0], k))  # windows complete out of order
    results = [_row(*spans[rows[k][0]], plans[rows[k][0]], info, rows[k][1], probs_by_row.get(k), labels, top_k,
                    rows[k][2]) for k in order]
    if boxes_only and align != 'box':
        notes.append(f'the face boxes come without landmarks ({boxes_only} sampled frames): those crops are aligned '
                     f'by the box, not by the eyes.')
    if weights == 'random-init':
        notes.insert(0, RANDOM_INIT_WARNING)
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    name = cfg.get('architecture') or type(model).__name__
    name = f'{name}.{cfg["tag"]}' if cfg.get('tag') else name
    face_pipeline = dict(detector=None if not detect else 'boxes' if boxes is not None else
                         detector if isinstance(detector, str) else type(detector).__name__,
                         align=align if detect else 'resize', crop_size=crop_size, margin=margin)
    return VideoPrediction(info, name, weights, labels, num_frames, results, notes, face_detection=detect,
                           face_pipeline=face_pipeline, timing=timing, **precision_of(model))


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``logoformer-predict``."""
    parser = ArgumentParser(
        prog='logoformer-predict', description='Facial expression of the face in a video, with LOGO-Former or a DFER-zoo model.')
    parser.add_argument('video', help='video file (anything FFmpeg reads: mp4, mov, avi, mkv, ...)')
    parser.add_argument('--model', default=None, help='timm model name (default: logoformer_base, or the folder\'s)')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--checkpoint', help='.safetensors / .pth weights file, or a model folder with config.json')
    parser.add_argument('--checkpoint-entry', metavar='NAME',
                        help="the entry of a training checkpoint file to load, e.g. model_ema (default: the model "
                             "entry, 'model' / 'state_dict', as its authors' evaluation loads it)")
    add_extra_weight_args(parser)
    weights.add_argument('--pretrained', action='store_true', help='published weights (none are published yet)')
    weights.add_argument(
        '--random-init', action='store_true', help='random weights: tests the pipeline, predictions are meaningless')
    parser.add_argument('--top-k', type=positive_int, default=3, help='labels to show per window (default: 3)')
    parser.add_argument('--device', default='cpu', help='torch device (default: cpu)')
    parser.add_argument('--json', action='store_true', help='print JSON (schema: predict.PREDICTION_SCHEMA)')
    parser.add_argument('--save-crops', metavar='DIR', help='write the face crops the model saw as PNGs')
    parser.add_argument(
        '--window', type=positive_float, metavar='SECONDS', help='predict every window of this length')
    parser.add_argument(
        '--stride', type=positive_float, metavar='SECONDS', help='step between windows (default: --window)')
    parser.add_argument('--margin', type=positive_float, default=DEFAULT_MARGIN,
                        help=f'crop side / face box side (default: {DEFAULT_MARGIN})')
    parser.add_argument('--face-detector', choices=DETECTORS, default='retinaface',
                        help='retinaface: 5 landmarks, weights in the package (default); haar: OpenCV\'s frontal '
                             'cascade, boxes only (the haar extra)')
    parser.add_argument('--face-align', choices=ALIGN_MODES, default='roll',
                        help='roll: eye line level (default); box: the box, no rotation; similarity: 5 landmarks onto '
                             'a template')
    faces = parser.add_mutually_exclusive_group()
    faces.add_argument('--face', type=non_negative_int, default=0, metavar='N',
                       help='follow face track N of the video, ranked by presence x size (default: 0, the main face)')
    faces.add_argument('--all-faces', action='store_true', help='a row per face track and window')
    parser.add_argument('--no-detect', action='store_true', help='the video already shows face crops: only resize')
    parser.add_argument(
        '--allow-no-face', action='store_true',
        help='classify windows without a reliable face too (their crops, or centre crops), with a warning')
    parser.add_argument('--batch-size', type=positive_int, default=8, help='windows per forward pass (default: 8)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help='bf16: weights cast to bfloat16 (measured faster than bf16 autocast, as exact); fp16: '
                             'autocast (needs a GPU or an AMX-FP16 CPU) (default: fp32)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model (the first batch compiles: tens of seconds on CPU)')
    parser.add_argument('--verbose', action='store_true',
                        help='print clips/s and the time shares of decoding, face detection and model to stderr')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``logoformer-predict``; user errors print one line to stderr and exit with 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.margin > MAX_MARGIN:
        parser.error(f'--margin must be at most {MAX_MARGIN}, got {args.margin}.')
    if args.stride is not None and args.window is None:
        parser.error('--stride needs --window.')
    from ..models import PretrainedWeightsUnavailableError

    def body() -> None:
        probe_video(args.video)  # fail on a bad video or crops folder before building the model
        check_save_crops(args.save_crops)
        try:
            model, weights = load_model(args.model, args.checkpoint, args.pretrained, args.random_init, args.device,
                                        args.precision, args.compile, args.checkpoint_entry,
                                        extra_weight_files(args))
        except RuntimeError as e:  # timm's loader reports unreadable or mismatched checkpoints as RuntimeError
            if args.checkpoint is None or isinstance(e, PretrainedWeightsUnavailableError):
                raise
            raise ValueError(f'could not load {args.checkpoint!r}: {e}') from None
        result = predict_video(
            args.video, model, window=args.window, stride=args.stride, top_k=args.top_k, margin=args.margin,
            detect=not args.no_detect, allow_no_face=args.allow_no_face, save_crops=args.save_crops,
            weights=weights, batch_size=args.batch_size, detector=args.face_detector, align=args.face_align,
            face=args.face, all_faces=args.all_faces)
        print(json.dumps(result.to_dict(), indent=2) if args.json else format_table(result))
        if args.verbose:
            compiled = ' (includes torch.compile\'s compilation)' if args.compile else ''
            print(format_throughput(result) + compiled, file=sys.stderr)
    return run_cli(body, prog='logoformer-predict', code=1)


def _console_entry() -> None:
    sys.exit(main())


if __name__ == '__main__':
    _console_entry()
