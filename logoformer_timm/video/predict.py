"""``logoformer-predict VIDEO``: facial expression of the face in a video, per clip or as a timeline of windows.

Pipeline: stream the video (:mod:`logoformer_timm.video.decode`), sample the model's frames uniformly over the clip
(or over each ``--window`` seconds every ``--stride`` seconds), detect and crop the face
(:mod:`logoformer_timm.video.faces`), run the model, report probabilities per label. A zoo tag samples each window
and merges its views by its authors' test protocol (``logoformer_timm.data.protocol``), and the result's warnings
say in one line what differs from their evaluation (the face crops, the video decode).

Python: :func:`load_clip` gives the ``(C, T, H, W)`` tensor a model takes, :func:`predict_video` a
:class:`VideoPrediction`. Needs the ``video`` extra.
"""
import argparse
import json
import os
import sys
import time
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from ..cli import ArgumentParser, positive_float, positive_int, run_cli
from ..data import ClipTransform, merge_views, resolve_video_data_config
from ..layers import check_finite_pixels
from ..weights.inference import PRECISIONS
from ..weights.inference import precision_of
from ..weights.loading import check_clip_model, label_names, load_model
from .decode import PathLike, VideoInfo, iter_clips, probe_video, sliding_windows, uniform_indices
from .decode import window_indices
from .faces import Box, FaceDetector, _import_cv2, crop_faces
from .prediction import PREDICTION_SCHEMA, VideoPrediction, WindowPrediction

__all__ = [
    'load_clip', 'clip_from_frames', 'predict_video', 'load_model', 'VideoPrediction', 'WindowPrediction',
    'PREDICTION_SCHEMA', 'format_throughput', 'main']

MAX_MARGIN = 10.  # crop side / face box side; more is the whole frame for any face worth classifying
RANDOM_INIT_WARNING = 'The model is randomly initialised (--random-init): these predictions are meaningless.'

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
    return _clip_tensor(crop_faces(picked, size=size, detect=False).crops)


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
    done = (f'{protocol.name}: each window\'s frames are sampled and its {protocol.num_views} views merged as the '
            f'authors\' evaluation does ({protocol.merge.replace("_", " ")})')
    if detect:
        return (done + '; but the faces are detected and cropped here and resized with OpenCV, where the authors '
                       'evaluated face crops made beforehand and resized with PIL (a video holds whole frames)')
    return done + ('; the frames are decoded from the video, where the authors read JPEG frames (the pixels differ '
                   'by the video codec)')


def _per_frame_boxes(boxes: Optional[Sequence[Optional[Box]]], info: VideoInfo, indices: Sequence[int]):
    if boxes is None:
        return None
    if len(boxes) != info.num_frames:
        raise ValueError(
            f'boxes must hold one (x1, y1, x2, y2) box or None per video frame ({info.num_frames} frames), '
            f'got {len(boxes)}.')
    return [boxes[i] for i in indices]


def load_clip(
        path: PathLike,
        num_frames: int = 16,
        size: Union[int, Tuple[int, int]] = 112,
        start: Optional[float] = None,
        end: Optional[float] = None,
        detector: Optional[FaceDetector] = None,
        boxes: Optional[Sequence[Optional[Box]]] = None,
        margin: float = 1.25,
        detect: bool = True,
        allow_no_face: bool = False,
) -> torch.Tensor:
    """Face clip ``(C, T, H, W)``, float RGB in [0, 1], of ``num_frames`` frames sampled uniformly from a video.

    Args:
        path: Video file.
        num_frames: Frames to sample uniformly over ``[start, end)`` (short videos repeat frames).
        size: Crop size, int or (H, W).
        start: Clip start in seconds (default: the first frame).
        end: Clip end in seconds (default: the end of the video).
        detector: Callable ``frame -> (N, 4) boxes``; default OpenCV's Haar frontal-face cascade.
        boxes: Your own face boxes, one ``(x1, y1, x2, y2)`` (or None) per video frame; skips detection.
        margin: Square crop side as a multiple of the face box's longer side.
        detect: False when the video already shows face crops: frames are only resized.
        allow_no_face: Centre crop (with a warning) instead of raising :class:`NoFaceError` when no face is found.
    """
    info = probe_video(path)
    indices = _clip_plan(info, num_frames, start, end)
    (_, frames), = iter_clips(path, [indices])
    faces = crop_faces(
        frames, size, detector=detector, boxes=_per_frame_boxes(boxes, info, indices), margin=margin,
        allow_no_face=allow_no_face, detect=detect)
    return _clip_tensor(faces.crops)


def check_save_crops(directory: Optional[str]) -> None:
    """A ``--save-crops`` folder must be new or empty: crops are never overwritten or mixed with another run's."""
    if directory and os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f'--save-crops {directory} is a file; pass a new or empty folder for the crops.')
    if directory and os.path.isdir(directory) and os.listdir(directory):
        raise ValueError(f'--save-crops {directory} is not empty; pass a new or empty folder (crops are never '
                         f'overwritten or mixed with another run\'s).')


def _save_crops(directory: str, window: int, indices: Sequence[int], crops: np.ndarray) -> None:
    cv2 = _import_cv2()
    folder = os.path.join(directory, f'window_{window:03d}')
    os.makedirs(folder, exist_ok=True)
    for k, (index, crop) in enumerate(zip(indices, crops)):
        path = os.path.join(folder, f'{k:02d}_frame{index:06d}.png')
        if not cv2.imwrite(path, cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise OSError(f'Could not write {path}.')


@torch.inference_mode()
def predict_video(
        path: PathLike,
        model: nn.Module,
        window: Optional[float] = None,
        stride: Optional[float] = None,
        top_k: int = 3,
        detector: Optional[FaceDetector] = None,
        boxes: Optional[Sequence[Optional[Box]]] = None,
        margin: float = 1.25,
        detect: bool = True,
        allow_no_face: bool = False,
        save_crops: Optional[str] = None,
        weights: str = 'user',
        batch_size: int = 8,
) -> VideoPrediction:
    """Expression probabilities for the face in a video: one clip over the whole video, or sliding windows.

    Args:
        path: Video file.
        model: A LOGO-Former (any model with ``in_chans``, ``num_frames``, ``img_size``, ``input_layout``).
        window: Window length in seconds for a timeline (default: one clip over the whole video).
        stride: Window step in seconds (default: ``window``).
        top_k: Labels to list per window, most probable first.
        detector, boxes, margin, detect, allow_no_face: As in :func:`load_clip`.
        save_crops: New or empty folder to write the crops the model saw (``window_NNN/KK_frameFFFFFF.png``).
        weights: Where the weights came from, recorded in the result.
        batch_size: Clips per forward pass.
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
    num_frames, size = model.num_frames, tuple(model.img_size)
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
    was_training = model.training
    model.eval()

    faces_by_window, probs_by_window, pending = {}, {}, []
    timing = dict(decode=0., faces=0., model=0.)
    started = time.perf_counter()

    def run(batch):
        tic = time.perf_counter()
        clips = torch.stack([c for _, c in batch])  # (B, V, ...)
        check_finite_pixels(clips)
        logits = model(clips.flatten(0, 1).to(device)).float().cpu()  # .cpu() waits for the device
        probs = merge_views(logits.reshape(*clips.shape[:2], -1), merge).float()
        for (number, _), p in zip(batch, probs):
            probs_by_window[number] = p
        timing.setdefault('first_batch', time.perf_counter() - tic)
        timing['model'] += time.perf_counter() - tic

    try:
        clips_iter = iter(iter_clips(path, plans))
        while True:
            tic = time.perf_counter()
            number, frames = next(clips_iter, (None, None))
            timing['decode'] += time.perf_counter() - tic
            if number is None:
                break
            tic = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # the notes go into the result instead
                faces = crop_faces(
                    frames, size, detector=detector, boxes=_per_frame_boxes(boxes, info, plans[number]),
                    margin=margin, allow_no_face=allow_no_face, detect=detect)
            timing['faces'] += time.perf_counter() - tic
            where = f'window {spans[number][0]:.2f}-{spans[number][1]:.2f} s: ' if window is not None else ''
            notes.extend(where + note for note in faces.warnings)
            faces_by_window[number] = faces
            if save_crops:
                _save_crops(save_crops, number, plans[number], faces.crops)
            # whole face frames (no detection) reach the protocol's resize as they are, as the authors' frames do
            pixels = np.stack(frames) if protocol is not None and not detect else faces.crops
            pixels = rearrange(torch.from_numpy(pixels), '(v t) h w c -> v t c h w', v=len(views[number]))
            pending.append((number, torch.stack([transform(view) for view in pixels])))
            if len(pending) == batch_size:
                run(pending)
                pending = []
        if pending:
            run(pending)
    finally:
        model.train(was_training)
    timing['total'] = time.perf_counter() - started

    results = []
    for number, ((start, end), indices) in enumerate(zip(spans, plans)):
        p = probs_by_window[number]
        order = p.argsort(descending=True)[:top_k].tolist()
        faces = faces_by_window[number]
        results.append(WindowPrediction(
            start=float(start), end=float(end), frame_indices=list(indices),
            frame_times=[info.frame_times[i] for i in indices], faces_found=list(faces.detected),
            boxes=list(faces.boxes), probabilities={label: float(v) for label, v in zip(labels, p)},
            top_k=[(labels[i], float(p[i])) for i in order]))
    if weights == 'random-init':
        notes.insert(0, RANDOM_INIT_WARNING)
    name = getattr(model, 'pretrained_cfg', {}).get('architecture') or type(model).__name__
    return VideoPrediction(info, name, weights, labels, num_frames, results, notes, face_detection=detect,
                           timing=timing, **precision_of(model))


def format_table(result: VideoPrediction) -> str:
    """Human-readable summary: the video, the weights, then one row per window with the top-k labels."""
    v = result.video
    lines = [
        f'{os.path.basename(v.path)}: {v.width}x{v.height}, {v.fps:.2f} fps, {v.num_frames} frames, {v.duration:.2f} s',
        f'model: {result.model} ({result.weights}), {result.frames_per_clip} frames per clip',
        '',
        f'{"start":>7} {"end":>7}  {"faces":>5}  top-{len(result.windows[0].top_k)}',
    ]
    for w in result.windows:
        found = f'{sum(w.faces_found)}/{len(w.faces_found)}' if result.face_detection else '-'
        top = '  '.join(f'{label} {p:.2f}' for label, p in w.top_k)
        lines.append(f'{w.start:>6.2f}s {w.end:>6.2f}s  {found:>5}  {top}')
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
    return (f'throughput: {n / total:.2f} clips/s ({n} clip{"s" * (n != 1)} in {total:.2f} s); {shares}; '
            f'first model batch {t.get("first_batch", 0.):.2f} s')


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
    parser.add_argument('--margin', type=positive_float, default=1.25, help='crop side / face box side (default: 1.25)')
    parser.add_argument('--no-detect', action='store_true', help='the video already shows face crops: only resize')
    parser.add_argument(
        '--allow-no-face', action='store_true', help='centre crop (with a warning) when no face is found')
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
                                        args.precision, args.compile, args.checkpoint_entry)
        except RuntimeError as e:  # timm's loader reports unreadable or mismatched checkpoints as RuntimeError
            if args.checkpoint is None or isinstance(e, PretrainedWeightsUnavailableError):
                raise
            raise ValueError(f'could not load {args.checkpoint!r}: {e}') from None
        result = predict_video(
            args.video, model, window=args.window, stride=args.stride, top_k=args.top_k, margin=args.margin,
            detect=not args.no_detect, allow_no_face=args.allow_no_face, save_crops=args.save_crops,
            weights=weights, batch_size=args.batch_size)
        print(json.dumps(result.to_dict(), indent=2) if args.json else format_table(result))
        if args.verbose:
            compiled = ' (includes torch.compile\'s compilation)' if args.compile else ''
            print(format_throughput(result) + compiled, file=sys.stderr)
    return run_cli(body, prog='logoformer-predict', code=1)


def _console_entry() -> None:
    sys.exit(main())


if __name__ == '__main__':
    _console_entry()
