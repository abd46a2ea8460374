"""The GPU benchmark in one run (``benchmarks/gpu.sh``): the plan of entries under a time budget, the matmul peak per
precision and the copy bandwidth (measured before and after the models), every entry's row, and the results folder
(``results.json``, ``results.md`` / ``.csv`` and ``summary.md``).

``python -m logoformer_timm.bench.gpu plan`` prints the plan with its estimate; ``run --out DIR`` measures it on
CUDA; ``run --dry-run`` goes through the same code on CPU with fake timings, fake peaks and a mocked
``torch.cuda`` (device name and memory), so that the plan, the schema and the report are checked without a GPU;
``report --out DIR`` rewrites the report from ``results.json`` (after a run was cut short, or to add the tests).

An entry is one model, clip, batch, precision, compiler setting and mode. Every entry of the full matrix is in the
plan; those not measured say why (a rule of the plan, the time budget, predicted memory, a failure). A fraction of
the matmul peak above 100 % is never printed: :func:`~logoformer_timm.bench.timing.set_peak_fractions` leaves it
empty and the row's warning says why, and :func:`check_results` fails a report that shows one.
"""
import argparse
import contextlib
import itertools
import json
import os
import re
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from unittest import mock

import timm
import torch

from .config import BenchConfig, BenchmarkError
from .counting import count_model
from .memory import is_oom
from .models import ModelSpec, protocol_clip, resolve_models
from .report import write_results
from .runner import benchmark, measure
from .timing import copy_bandwidth, gemm_peak, matmul_settings, percentile, set_peak_fractions, time_steps

__all__ = ['Entry', 'build_plan', 'format_plan', 'peer_models', 'run_plan', 'write_report', 'check_results', 'main']

CLIPS = ((16, 112), (32, 224))
BATCHES = (1, 32, 128)
PRECISIONS = ('float32', 'amp_bfloat16')
MODES = ('inference', 'train')
LOGO_MODELS = ('logoformer_tiny', 'logoformer_small', 'logoformer_base')
JOINT = 'logoformer_base[block_types=joint]'
PEER_PATTERNS = ('former_dfer*', 'mae_dfer*', 'dfer_clip*')
# compiled entries (model, frames, mode), in running order: the serving setting (bf16, inference batch 128, training
# batch 32) of logoformer_base, its joint twin at the long clip, then training and the smaller variants
COMPILED = (('logoformer_base', 16, 'inference'), ('logoformer_base', 32, 'inference'), (JOINT, 32, 'inference'),
            ('logoformer_base', 16, 'train'), ('logoformer_tiny', 16, 'inference'),
            ('logoformer_small', 16, 'inference'), (JOINT, 16, 'inference'), (JOINT, 16, 'train'))

# running order, by (compiled, mode, precision): what users of DFER models on a GPU ask first comes first
_GROUPS = {(False, 'inference', 'amp_bfloat16'): 0, (False, 'train', 'amp_bfloat16'): 1,
           (True, 'inference', 'amp_bfloat16'): 2, (False, 'inference', 'float32'): 3,
           (False, 'train', 'float32'): 4, (True, 'train', 'amp_bfloat16'): 5}

# for the plan's estimate and the dry run's fakes only (a run measures its own): an H200, KINDS.md's figures
ASSUMED_DEVICE = 'NVIDIA H200'
ASSUMED_MEMORY_MB = 139 * 2 ** 30 / 1e6
ASSUMED_GFLOPS = {'float32': 50e3, 'tf32': 400e3, 'amp_bfloat16': 750e3}
ASSUMED_COPY_GBPS = 4300.
ASSUMED_EFFICIENCY = {'inference': 0.35, 'train': 0.25}  # fraction of the matmul peak a model reaches
LAUNCH_FLOOR_S = {'inference': 0.004, 'train': 0.012}  # eager step time floor at small batch (kernel launches)
COMPILE_S = {'inference': 35., 'train': 70.}  # inductor compile of one model and shape (a guess for 16 CPU cores)
BUILD_S = .5  # building one model on the device
TRAIN_MB_PER_GMAC = 4.4  # activations saved per train GMAC of one clip, float32 (saved_activations.md, base 32x224)
INFER_MB_PER_GMAC = 2.5
MEMORY_HEADROOM = 0.85  # an entry runs when its predicted peak is under this share of the device's memory
DEFAULT_BUDGET_S = 150.
_PLAN_BUDGET = 'plan budget'
# the dry run fakes this entry above its own peak (as TF32 convolutions can outrun the float32 matmul), so that
# the report's handling of an impossible fraction is checked too
DRY_RUN_ABOVE_PEAK = 'logoformer_tiny 16x112x112 b32 float32 eager inference'


@dataclass
class Entry:
    """One measurement of the plan, its estimate and what became of it."""
    model: str
    frames: int
    img_size: int
    batch_size: int
    precision: str
    compile: bool
    mode: str
    group: int = 0
    gmacs: float = 0.  # per clip, of this mode (forward; forward + backward for train)
    param_count: float = 0.
    est_step_s: float = 0.
    est_s: float = 0.
    num_warm_iter: int = 2
    num_bench_iter: int = 10
    status: str = 'planned'  # planned, measured, skipped, failed
    reason: str = ''
    wall_s: Optional[float] = None

    @property
    def label(self) -> str:
        """A readable key: model, clip, batch, precision, compiler, mode."""
        return (f'{self.model} {self.frames}x{self.img_size}x{self.img_size} b{self.batch_size} {self.precision} '
                f'{"compiled" if self.compile else "eager"} {self.mode}')


def peer_models() -> Tuple[List[Tuple[str, Tuple[int, int]]], List[str]]:
    """The DFER peers registered now (timm names matching :data:`PEER_PATTERNS`, each with its protocol clip) and
    a reason per pattern that matched nothing."""
    found, missing = [], []
    for pattern in PEER_PATTERNS:
        names = [n for n in timm.list_models(pattern) if n.startswith(pattern.rstrip('*'))]
        if not names:
            missing.append(f'{pattern}: no such timm model is registered in this checkout')
        found += [(n, protocol_clip(ModelSpec(n))) for n in names]
    return found, missing


def _est_step(gmacs: float, batch: int, precision: str, mode: str) -> float:
    flops = 2 * gmacs * 1e9 * batch
    return max(flops / (ASSUMED_EFFICIENCY[mode] * ASSUMED_GFLOPS[precision] * 1e9), LAUNCH_FLOOR_S[mode])


def _iterations(step_s: float, compile: bool) -> Tuple[int, int]:
    """(warm-up, timed) steps: about 0.5 s of timed steps, 5 to 15 of them."""
    timed = int(min(15, max(5, round(.5 / max(step_s, 1e-3)))))
    return (1 if compile else 2), timed


def _rule(model: str, peer: bool, frames: int, batch: int, precision: str, compile: bool, mode: str) -> str:
    """Why the plan leaves an entry of the full matrix out ('' = it is planned)."""
    if compile and peer:
        return 'compiled: LOGO-Former and the joint baseline only (compile time)'
    if compile and (model, frames, mode) not in COMPILED:
        return (f'compiled: not this model, clip and mode (compile time; the plan compiles {len(COMPILED)}: '
                'COMPILED in logoformer_timm/bench/gpu.py)')
    if compile and precision != 'amp_bfloat16':
        return 'compiled: bf16 autocast only (the serving precision; compile time)'
    if compile and batch != (128 if mode == 'inference' else 32):
        return f'compiled {mode}: batch {128 if mode == "inference" else 32} only (compile time)'
    return ''


def build_plan(models: Optional[Sequence[str]] = None, count_fn: Callable = count_model,
               budget_s: float = DEFAULT_BUDGET_S) -> Tuple[List[Entry], List[str]]:
    """The full matrix as entries in running order, each with its estimate (planned, or skipped with a reason),
    and the lines saying which peers are absent. ``models`` restricts it (default: the variants, the joint
    baseline and the peers found)."""
    peers, notes = peer_models()
    if models is None:
        chosen = [(m, CLIPS, False) for m in (*LOGO_MODELS, JOINT)] + [(n, (clip,), True) for n, clip in peers]
    else:
        peer_clips = dict(peers)
        chosen = [(m, (peer_clips[m],) if m in peer_clips else CLIPS, m in peer_clips) for m in models]
    entries: List[Entry] = []
    for model, clips, peer in chosen:
        spec = resolve_models([model])[0]
        for frames, size in clips:
            count = count_fn(spec, frames, size)
            for compile in (False, True):
                for mode in MODES:
                    for precision in PRECISIONS:
                        for batch in BATCHES:
                            gmacs = count.infer.gmacs if mode == 'inference' else count.train_gmacs
                            e = Entry(model, frames, size, batch, precision, compile, mode, gmacs=gmacs,
                                      param_count=count.param_count)
                            e.group = _GROUPS.get((compile, mode, precision), len(_GROUPS))
                            e.est_step_s = _est_step(gmacs, batch, precision, mode)
                            e.num_warm_iter, e.num_bench_iter = _iterations(e.est_step_s, compile)
                            steps = e.num_warm_iter + e.num_bench_iter + (5 if compile else 0)
                            e.est_s = BUILD_S + steps * e.est_step_s + (COMPILE_S[mode] if compile else 0)
                            e.reason = _rule(model, peer, frames, batch, precision, compile, mode)
                            e.status = 'skipped' if e.reason else 'planned'
                            entries.append(e)
    # batch 1 first in each group (its memory predicts the larger batches'); compiled ones in COMPILED's order
    order = {key: i for i, key in enumerate(COMPILED)}
    entries.sort(key=lambda e: (e.group, order.get((e.model, e.frames, e.mode), 0) if e.compile else 0,
                                e.frames * e.img_size ** 2, e.batch_size))
    total = 0.
    for e in entries:
        if e.status == 'planned':
            if total + e.est_s > budget_s:
                e.status, e.reason = 'skipped', f'{_PLAN_BUDGET}: {budget_s:.0f} s would be exceeded (est {e.est_s:.1f} s)'
            else:
                total += e.est_s
    return entries, notes


def format_plan(entries: Sequence[Entry], notes: Sequence[str] = ()) -> str:
    """The plan as text: planned entries with their estimate, the skipped ones grouped by reason."""
    planned = [e for e in entries if e.status == 'planned']
    lines = [f'{len(planned)} of {len(entries)} entries planned, estimated {sum(e.est_s for e in planned):.0f} s '
             f'on an H200 (assumed {ASSUMED_GFLOPS["amp_bfloat16"] / 1e3:.0f} TFLOP/s bf16, '
             f'{ASSUMED_GFLOPS["float32"] / 1e3:.0f} fp32; compile {COMPILE_S["inference"]:.0f} / '
             f'{COMPILE_S["train"]:.0f} s per model inference / train):']
    lines += [f'  {e.label}: {e.num_warm_iter}+{e.num_bench_iter} steps, est {e.est_s:.1f} s' for e in planned]
    reasons: Dict[str, int] = {}
    for e in entries:
        if e.status != 'planned':
            key = re.sub(r' \(est [0-9.]+ s\)', '', e.reason)
            reasons[key] = reasons.get(key, 0) + 1
    lines += ['skipped:'] + [f'  {n} entries: {r}' for r, n in reasons.items()] + [f'  {n}' for n in notes]
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------------------
# measuring


def _predicted_mb(entry: Entry, batch1_mb: Optional[float]) -> float:
    """Peak memory of ``entry`` from the same setting's batch-1 peak (weights, plus per clip the rest)."""
    fixed = entry.param_count * 4 * (4 if entry.mode == 'train' else 1)  # MB: weights (+ grads, momentum, slack)
    if batch1_mb is None:  # no batch-1 run: the plan's own estimate
        per_mb = TRAIN_MB_PER_GMAC if entry.mode == 'train' else INFER_MB_PER_GMAC
        per_clip = entry.gmacs * per_mb * (0.6 if entry.precision != 'float32' else 1.)
    else:
        per_clip = max(batch1_mb - fixed, 0.)
    return fixed + entry.batch_size * per_clip


class _FakeCudaEvent:
    """``torch.Event`` on a fake device clock (ms) that each fake step advances by its estimated time."""
    clock = [0.]

    def __init__(self, device: Any = None, enable_timing: bool = False):
        self.t: Optional[float] = None

    def record(self) -> None:
        self.t = self.clock[0]

    def elapsed_time(self, end: '_FakeCudaEvent') -> float:
        return end.t - self.t


def _fake_measure(entry_of: Callable[[ModelSpec, str, BenchConfig], Entry]) -> Callable[..., Dict[str, Any]]:
    """A stand-in for :func:`~logoformer_timm.bench.runner.measure`: the columns it returns, timed by the real
    CUDA-event code (:func:`~logoformer_timm.bench.timing.time_steps`) on fake events, each step its estimate."""
    def fake(spec: ModelSpec, mode: str, cfg: BenchConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
        e = entry_of(spec, mode, cfg)
        step_s = e.est_step_s
        if e.label == DRY_RUN_ABOVE_PEAK:  # 125 % of the assumed float32 matmul peak
            step_s = 2 * e.gmacs * 1e9 * cfg.batch_size / (1.25 * ASSUMED_GFLOPS[e.precision] * 1e9)
        jitter = itertools.cycle((1., .97, 1.05, .99, 1.02))

        def step() -> None:
            _FakeCudaEvent.clock[0] += step_s * 1e3 * next(jitter)

        with mock.patch.object(torch, 'Event', _FakeCudaEvent), \
                mock.patch.object(torch.accelerator, 'synchronize', lambda device=None: None):
            times = time_steps(step, cfg.num_warm_iter, cfg.num_bench_iter, torch.device('cuda'))
        median = statistics.median(times)
        return dict(samples_per_sec=cfg.batch_size / (median / 1e3), step_time=median,
                    step_time_p10=percentile(times, 10), step_time_p90=percentile(times, 90),
                    batch_size=cfg.batch_size, peak_mem_mb=_predicted_mb(e, None), warm_steps=cfg.num_warm_iter,
                    warning='', mem_method='dry run: no memory measured', load_avg_1m=None, batch_note='')
    return fake


def _measure_once(spec: ModelSpec, mode: str, cfg: BenchConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """:func:`~logoformer_timm.bench.runner.measure` in this process without the smaller-batch retry (an entry is
    its batch: an out-of-memory error fails it); the allocator's cache is emptied after each."""
    try:
        result = measure(spec, mode, cfg)
        result['batch_note'] = ''
        return result
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        if cfg.torchcompile:
            torch.compiler.reset()


def _ceilings(device: torch.device, dry_run: bool, gemm_size: int, copy_bytes: int) -> Dict[str, float]:
    """Matmul peak per precision (float32 as PyTorch sets it, tf32 on, bf16) and copy bandwidth, GFLOP/s and GB/s."""
    if dry_run:
        return {**{f'gemm_{k}_gflops': v for k, v in ASSUMED_GFLOPS.items()}, 'copy_gbps': ASSUMED_COPY_GBPS}
    out = {'gemm_float32_gflops': gemm_peak(device, 'float32', gemm_size)}
    with _tf32():
        out['gemm_tf32_gflops'] = gemm_peak(device, 'float32', gemm_size)
    out['gemm_amp_bfloat16_gflops'] = gemm_peak(device, 'amp_bfloat16', gemm_size)
    out['copy_gbps'] = copy_bandwidth(device, copy_bytes)
    return out


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@contextlib.contextmanager
def _fake_cuda() -> Iterator[None]:
    """torch.cuda as seen on an H200, for the dry run's environment columns (no kernel runs)."""
    with mock.patch.object(torch.cuda, 'get_device_name', lambda device=None: f'{ASSUMED_DEVICE} (dry run: fake)'):
        yield


def run_plan(out: str, dry_run: bool = False, budget_s: float = DEFAULT_BUDGET_S,
             models: Optional[Sequence[str]] = None, device: str = 'cuda', gemm_size: int = 8192,
             copy_bytes: int = 2 ** 30, log: Callable[[str], None] = print, command: str = '') -> Dict[str, Any]:
    """Plan, measure the ceilings, run every planned entry within ``budget_s`` seconds, measure the ceilings again,
    and write the results folder ``out``; ``dry_run``: the same on CPU with fake timings. Returns the results."""
    if not dry_run and not torch.cuda.is_available():
        raise BenchmarkError('the GPU benchmark needs a CUDA GPU (torch.cuda.is_available() is False); '
                             'use --dry-run to check it on CPU.')
    os.makedirs(out, exist_ok=True)
    start = time.monotonic()
    counts: Dict[Tuple[str, int, int], Any] = {}

    def count_fn(spec: ModelSpec, frames: int, size: int) -> Any:
        key = (spec.label, frames, size)
        if key not in counts:
            counts[key] = count_model(spec, frames, size)
        return counts[key]

    entries, notes = build_plan(models, count_fn, budget_s)
    log(format_plan(entries, notes))
    dev = torch.device('cpu' if dry_run else device)
    results: Dict[str, Any] = dict(
        command=command, dry_run=dry_run, budget_s=budget_s, started=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
        environment=_environment(dev, dry_run), notes=list(notes), ceilings_start=_ceilings(
            dev, dry_run, gemm_size, copy_bytes), rows=[], entries=[])
    log(f'ceilings at the start: {_format_ceilings(results["ceilings_start"])}')
    by_key = {(e.model, e.frames, e.img_size, e.batch_size, e.precision, e.compile, e.mode): e for e in entries}
    entry_of = lambda spec, mode, cfg: by_key[(spec.label, cfg.num_frames, cfg.img_size, cfg.batch_size,
                                                cfg.precision, bool(cfg.torchcompile), mode)]
    measure_fn = _fake_measure(entry_of) if dry_run else _measure_once
    batch1_mb: Dict[Tuple, float] = {}
    oom_at: Dict[Tuple, int] = {}
    memory_mb = ASSUMED_MEMORY_MB if dry_run else torch.cuda.get_device_properties(dev).total_memory / 1e6
    spent, estimated = 0., 0.
    simulated = 0.  # the dry run's clock: each entry takes its estimate

    def elapsed() -> float:
        return simulated if dry_run else time.monotonic() - start

    for e in entries:
        # entries beyond the plan's budget run too when the time left allows: the estimate is only a guess
        if e.status != 'planned' and not e.reason.startswith(_PLAN_BUDGET):
            continue
        e.status, e.reason = 'planned', ''
        setting = (e.model, e.frames, e.img_size, e.precision, e.compile, e.mode)
        # eager estimates are scaled by how the eager entries so far compared with theirs (compile times are not)
        scale = 1. if e.compile or not estimated else min(4., max(.5, spent / estimated))
        left = budget_s - elapsed()
        predicted = _predicted_mb(e, batch1_mb.get(setting))
        if e.batch_size > oom_at.get(setting, e.batch_size):
            e.status, e.reason = 'skipped', f'batch {oom_at[setting]} of the same setting ran out of memory'
        elif predicted > MEMORY_HEADROOM * memory_mb:
            e.status, e.reason = 'skipped', (f'predicted peak {predicted / 1e3:.1f} GB > {MEMORY_HEADROOM:.0%} of '
                                             f'{memory_mb / 1e3:.0f} GB')
        elif e.est_s * scale > left:
            e.status, e.reason = 'skipped', f'time budget: {left:.0f} s left, entry est {e.est_s * scale:.1f} s'
        if e.status == 'skipped':
            log(f'  skipped {e.label}: {e.reason}')
            continue
        cfg = BenchConfig(num_frames=e.frames, img_size=e.img_size, batch_size=e.batch_size, device=device,
                          precision=e.precision, torchcompile='inductor' if e.compile else None,
                          num_warm_iter=e.num_warm_iter, num_bench_iter=e.num_bench_iter, isolate=False,
                          gemm_size=gemm_size)
        t0 = time.monotonic()
        with _fake_cuda() if dry_run else contextlib.nullcontext():
            try:
                rows = benchmark(resolve_models([e.model]), cfg, (e.mode,), log=log, measure_fn=measure_fn,
                                 count_fn=count_fn)
            except Exception as err:  # one entry failing is reported; the run goes on
                rows = []
                e.status = 'failed'
                e.reason = ('out of memory: ' if is_oom(err) else '') + f'{type(err).__name__}: {str(err)[:300]}'
                if is_oom(err):
                    oom_at[setting] = min(e.batch_size, oom_at.get(setting, e.batch_size))
                log(f'  failed {e.label}: {e.reason}')
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        e.wall_s = e.est_s if dry_run else time.monotonic() - t0
        simulated += e.est_s
        prefix = 'infer' if e.mode == 'inference' else 'train'
        for row in rows:
            if row.get('skipped'):  # a row without measurements: the model cannot take this clip
                e.status, e.reason = 'skipped', f'the model cannot take this clip: {row["skipped"]}'
                continue
            if row.get(f'{prefix}_batch_note', '').startswith('failed'):
                e.status, e.reason = 'failed', row[f'{prefix}_batch_note']
                continue
            e.status = 'measured'
            row.update(entry=e.label, mode=e.mode, compiled=e.compile, clip=f'{e.frames}x{e.img_size}x{e.img_size}')
            results['rows'].append(row)
            if e.batch_size == 1 and row.get(f'{prefix}_peak_mem_mb') is not None:
                batch1_mb[setting] = row[f'{prefix}_peak_mem_mb']
        if not e.compile:
            spent, estimated = spent + e.wall_s, estimated + e.est_s
        results['entries'] = [asdict(x) for x in entries]
        _save(out, results)  # after every entry: a run cut short keeps what it measured
    results['ceilings_end'] = _ceilings(dev, dry_run, gemm_size, copy_bytes)
    log(f'ceilings at the end: {_format_ceilings(results["ceilings_end"])}')
    results['entries'] = [asdict(x) for x in entries]
    results['wall_s'] = elapsed()
    _set_fractions(results)
    _save(out, results)
    write_report(out, log=log)
    return results


def _environment(device: torch.device, dry_run: bool) -> Dict[str, Any]:
    env: Dict[str, Any] = dict(torch=torch.__version__, timm=timm.__version__, python=sys.version.split()[0],
                               cuda=torch.version.cuda, matmul=matmul_settings())
    if dry_run:
        env.update(device_name=f'{ASSUMED_DEVICE} (dry run: fake)', total_memory_mb=ASSUMED_MEMORY_MB)
    else:
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, total_memory_mb=props.total_memory / 1e6,
                   multi_processor_count=props.multi_processor_count,
                   capability=f'{props.major}.{props.minor}', cudnn=torch.backends.cudnn.version(),
                   bf16_supported=torch.cuda.is_bf16_supported(), sdpa_backends=_sdpa_seen(device))
    return env


def _sdpa_seen(device: torch.device) -> Dict[str, Any]:
    """SDPA kernel launches per backend in one logoformer_tiny / joint inference pass (16x112, batch 2), per
    precision; an error is recorded, not raised."""
    from .profiling import sdpa_backends
    seen: Dict[str, Any] = {}
    for label in ('logoformer_tiny', JOINT.replace('base', 'tiny')):
        for precision in PRECISIONS:
            try:
                model = timm.create_model(label.split('[')[0], device=device, **resolve_models([label])[0].kwargs)
                x = torch.rand(2, 3, 16, 112, 112, device=device)
                dtype = torch.bfloat16 if precision != 'float32' else None
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    model.eval()(x)
                    seen[f'{label} {precision}'] = sdpa_backends(lambda: model(x), device)
            except Exception as err:  # recorded: the tests say more
                seen[f'{label} {precision}'] = f'{type(err).__name__}: {str(err)[:200]}'
    return seen


def _format_ceilings(c: Dict[str, float]) -> str:
    return (f'matmul fp32 {c["gemm_float32_gflops"] / 1e3:.1f}, tf32 {c["gemm_tf32_gflops"] / 1e3:.1f}, '
            f'bf16 {c["gemm_amp_bfloat16_gflops"] / 1e3:.1f} TFLOP/s; copy {c["copy_gbps"]:.0f} GB/s')


def _set_fractions(results: Dict[str, Any]) -> None:
    """Each row's % peak: of its precision's matmul peak, the higher of the start and end measurements; float32
    rows also get ``*_tf32_peak_fraction``, of the TF32 matmul peak (PyTorch runs float32 convolutions in TF32 by
    default, so a float32 model can outrun the float32 matmul), left empty above 1 like the other."""
    start, end = results['ceilings_start'], results.get('ceilings_end') or results['ceilings_start']
    for precision in PRECISIONS:
        key = f'gemm_{precision}_gflops'
        set_peak_fractions([r for r in results['rows'] if r['precision'] == precision], max(start[key], end[key]))
    tf32 = max(start['gemm_tf32_gflops'], end['gemm_tf32_gflops'])
    for row in results['rows']:
        for p in ('infer', 'train'):
            achieved = row.get(f'{p}_achieved_gflops_per_sec')
            if row['precision'] == 'float32' and achieved is not None and tf32:
                row[f'{p}_tf32_peak_fraction'] = achieved / tf32 if achieved <= tf32 else None


def _save(out: str, results: Dict[str, Any]) -> None:
    tmp = os.path.join(out, 'results.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(results, f, indent=2, default=str)
        f.write('\n')
    os.replace(tmp, os.path.join(out, 'results.json'))


# ---------------------------------------------------------------------------------------------------------------
# the report


def _tests(out: str) -> Dict[str, Any]:
    """The CUDA tests' outcome from ``pytest_cuda.xml`` (junit): counts and the failed / skipped ones."""
    path = os.path.join(out, 'pytest_cuda.xml')
    if not os.path.exists(path):
        return dict(ran=False)
    root = ET.parse(path).getroot()
    cases, failed, skipped = 0, [], []
    for case in root.iter('testcase'):
        cases += 1
        name = f'{case.get("classname", "")}.{case.get("name", "")}'
        for tag in ('failure', 'error'):
            for el in case.findall(tag):
                failed.append(f'{name}: {(el.get("message") or "")[:200]}')
        for el in case.findall('skipped'):
            skipped.append(f'{name}: {(el.get("message") or "")[:200]}')
    return dict(ran=True, cases=cases, failed=failed, skipped=skipped,
                passed=cases - len(failed) - len(skipped))


_SUMMARY_COLUMNS = (('model', 'model', 's'), ('clip', 'clip', 's'), ('batch', 'batch', 'd'),
                    ('precision', 'precision', 's'), ('compiled', 'compiled', 's'), ('mode', 'mode', 's'),
                    ('gmacs', 'GMACs/clip', '.2f'), ('clips_s', 'clips/s', '.1f'), ('ms', 'ms', '.2f'),
                    ('p10_p90', 'p10-p90 ms', 's'), ('mem', 'peak MB', '.0f'), ('fraction', '% peak', '.1%'),
                    ('tf32_fraction', '% TF32 peak', '.1%'), ('note', 'note', 's'))


def _summary_cells(row: Dict[str, Any]) -> Dict[str, Any]:
    p = 'infer' if row['mode'] == 'inference' else 'train'
    return dict(model=row['model'], clip=row['clip'], batch=row[f'{p}_batch_size'], precision=row['precision'],
                compiled='yes' if row['compiled'] else 'no', mode=row['mode'],
                gmacs=row['infer_gmacs'] if p == 'infer' else row['train_gmacs'],
                clips_s=row[f'{p}_samples_per_sec'], ms=row[f'{p}_step_time'],
                p10_p90=f'{row[f"{p}_step_time_p10"]:.2f}-{row[f"{p}_step_time_p90"]:.2f}',
                mem=row.get(f'{p}_peak_mem_mb'), fraction=row.get(f'{p}_peak_fraction'),
                tf32_fraction=row.get(f'{p}_tf32_peak_fraction'),
                note='; '.join(x for x in (row.get(f'{p}_warning'), row.get(f'{p}_batch_note')) if x))


def format_summary(results: Dict[str, Any], tests: Dict[str, Any]) -> str:
    """``summary.md``: device, ceilings, tests, one line per measured entry, and every entry not measured."""
    env, dry = results['environment'], results['dry_run']
    lines = ['# GPU benchmark' + (' - DRY RUN: fake timings on CPU, not a measurement' if dry else ''), '']
    lines += [f'Command: `{results["command"]}`', '',
              f'{env["device_name"]}, {env.get("total_memory_mb", 0) / 1e3:.0f} GB; torch {env["torch"]} (CUDA '
              f'{env["cuda"]}), timm {env["timm"]}, Python {env["python"]}; started {results["started"]}, '
              f'{results.get("wall_s", 0):.0f} s of a {results["budget_s"]:.0f} s budget. float32 as PyTorch sets it: '
              + ', '.join(f'{k}={v}' for k, v in env['matmul'].items()) + '.', '']
    if env.get('sdpa_backends'):
        lines += ['SDPA kernels per backend in one inference pass (16x112, batch 2): ' + '; '.join(
            f'{k}: {v}' for k, v in env['sdpa_backends'].items()) + '.', '']
    lines += ['## Ceilings (this run)', '', '| | start | end |', '|---|---|---|']
    start, end = results['ceilings_start'], results.get('ceilings_end') or {}
    for key, name in (('gemm_float32_gflops', 'matmul float32 (as set), TFLOP/s'),
                      ('gemm_tf32_gflops', 'matmul tf32, TFLOP/s'),
                      ('gemm_amp_bfloat16_gflops', 'matmul bf16, TFLOP/s')):
        lines.append(f'| {name} | {start[key] / 1e3:.1f} | {_fmt(end.get(key), 1e3)} |')
    lines += [f'| device-to-device copy, GB/s (read + write) | {start["copy_gbps"]:.0f} | '
              f'{_fmt(end.get("copy_gbps"), 1)} |', '',
              '% peak = counted FLOPs per second / the matmul peak of the row\'s precision (float32 rows: float32 '
              'as set, bf16 rows: bf16), the higher of start and end; above 100 % it is left empty and the note '
              'says why. float32 rows also give % of the TF32 matmul peak: PyTorch runs float32 convolutions (the '
              'ResNet-18 stem) in TF32 unless told otherwise.', '']
    lines += ['## CUDA tests', '']
    if not tests.get('ran'):
        lines += ['Not run (no pytest_cuda.xml in this folder).', '']
    else:
        lines += [f'{tests["passed"]} passed, {len(tests["failed"])} failed, {len(tests["skipped"])} skipped of '
                  f'{tests["cases"]}.', ''] + [f'- failed: {t}' for t in tests['failed']] + [
                  f'- skipped: {t}' for t in tests['skipped']] + ['']
    lines += ['## Measured', '']
    cells = [_summary_cells(r) for r in results['rows']]
    lines.append('| ' + ' | '.join(h for _, h, _ in _SUMMARY_COLUMNS) + ' |')
    lines.append('|' + '---|' * len(_SUMMARY_COLUMNS))
    for c in cells:
        lines.append('| ' + ' | '.join('' if c[k] is None else format(c[k], f).replace('|', '/')
                                       for k, _, f in _SUMMARY_COLUMNS) + ' |')
    not_measured = [e for e in results['entries'] if e['status'] != 'measured']
    lines += ['', f'## Not measured ({len(not_measured)} of {len(results["entries"])} entries)', '']
    lines += [f'- {n}' for n in results.get('notes', [])]
    reasons: Dict[str, List[str]] = {}
    for e in not_measured:
        key = re.sub(r' \(est [0-9.]+ s\)|: [0-9]+ s left, entry est [0-9.]+ s', '', e['reason'])
        key = f'{e["status"]}: {key}'
        reasons.setdefault(key, []).append(Entry(**{k: v for k, v in e.items()}).label)
    for reason, labels in reasons.items():
        lines.append(f'- {reason} ({len(labels)}): ' + ', '.join(labels[:8]) + (' ...' if len(labels) > 8 else ''))
    return '\n'.join(lines) + '\n'


def _fmt(value: Optional[float], div: float) -> str:
    return '' if value is None else f'{value / div:.1f}'


def check_results(results: Dict[str, Any], texts: Sequence[str] = ()) -> List[str]:
    """Problems with a results dict and its report texts: missing columns, a fraction above 1, a printed
    percentage above 100 %, an entry without a status or reason. Empty when all is well."""
    problems = []
    needed = ('model', 'infer_gmacs', 'train_gmacs', 'param_count', 'precision', 'device_name', 'gemm_gflops_per_sec',
              'flop_counter', 'entry', 'mode', 'clip', 'compiled')
    for row in results['rows']:
        p = 'infer' if row['mode'] == 'inference' else 'train'
        missing = [c for c in needed + tuple(f'{p}_{c}' for c in ('samples_per_sec', 'step_time', 'batch_size',
                                                                     'peak_fraction', 'achieved_gflops_per_sec'))
                   if c not in row]
        if missing:
            problems.append(f'{row.get("entry")}: missing columns {", ".join(missing)}')
        for column in (f'{p}_peak_fraction', f'{p}_tf32_peak_fraction'):
            fraction = row.get(column)
            if fraction is not None and not 0 <= fraction <= 1:
                problems.append(f'{row.get("entry")}: {column} {fraction} outside [0, 1]')
    for e in results['entries']:
        if e['status'] not in ('measured', 'skipped', 'failed'):
            problems.append(f'{Entry(**e).label}: status {e["status"]!r} after the run')
        elif e['status'] != 'measured' and not e['reason']:
            problems.append(f'{Entry(**e).label}: {e["status"]} without a reason')
    for text in texts:
        for m in re.finditer(r'(\d+(?:\.\d+)?)\s?%', text):
            if float(m.group(1)) > 100:
                problems.append(f'a printed percentage above 100: {text[max(0, m.start() - 60):m.end()]!r}')
    return problems


def write_report(out: str, log: Callable[[str], None] = print) -> List[str]:
    """From ``out/results.json`` (and ``pytest_cuda.xml`` if there): ``summary.md``, ``results.md`` and
    ``results.csv``; the fractions are set again and the whole is checked (:func:`check_results`). Returns the
    problems found (also logged)."""
    path = os.path.join(out, 'results.json')
    if not os.path.exists(path):
        raise BenchmarkError(f'--out {out}: no results.json there (run the benchmark first).')
    with open(path) as f:
        results = json.load(f)
    for e in results['entries']:  # a run cut short: what never ran says so
        if e['status'] == 'planned':
            e['status'], e['reason'] = 'skipped', 'not reached: the run ended before it (time limit or a crash)'
    _set_fractions(results)
    results['tests'] = _tests(out)
    _save(out, results)
    summary = format_summary(results, results['tests'])
    header, notes = results['command'], f'{results["environment"]["device_name"]}; see summary.md'
    rows = [dict(r) for r in results['rows']]
    if rows:
        write_results(rows, os.path.join(out, 'results.md'), 'md', header=header, notes=notes)
        write_results(rows, os.path.join(out, 'results.csv'), 'csv', header=header, notes=notes)
    with open(os.path.join(out, 'results.md') if rows else os.devnull) as f:
        md = f.read()
    problems = check_results(results, [summary, md])
    if problems:
        summary += '\n## Problems found by the check\n\n' + '\n'.join(f'- {p}' for p in problems) + '\n'
    with open(os.path.join(out, 'summary.md'), 'w') as f:
        f.write(summary)
    measured = sum(e['status'] == 'measured' for e in results['entries'])
    log(f'report: {measured} of {len(results["entries"])} entries measured; {len(problems)} problem(s); '
        f'written to {out}/summary.md, results.md, results.csv, results.json')
    for p in problems:
        log(f'problem: {p}')
    return problems


# ---------------------------------------------------------------------------------------------------------------
# the command


def build_parser() -> argparse.ArgumentParser:
    """``python -m logoformer_timm.bench.gpu {plan,run,report}``."""
    from ..cli import ArgumentParser, positive_float
    parser = ArgumentParser(prog='python -m logoformer_timm.bench.gpu', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='action', required=True)
    for name, text in (('plan', 'print the plan and its estimate'), ('run', 'measure the plan, write --out'),
                       ('report', 'rewrite the report of --out from its results.json')):
        p = sub.add_parser(name, help=text)
        if name != 'report':
            p.add_argument('--budget-s', type=positive_float, default=DEFAULT_BUDGET_S,
                           help='seconds for the entries (the plan stops adding entries there, the run skips those '
                                'that no longer fit)')
            p.add_argument('--model', nargs='+', default=None, help='only these models (default: the full plan)')
        if name != 'plan':
            p.add_argument('--out', required=True, help='results folder')
        if name == 'run':
            p.add_argument('--dry-run', action='store_true', help='on CPU, fake timings: check plan, schema, report')
            p.add_argument('--device', default='cuda', help='cuda or cuda:N')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; user errors print one line and return 2; a report with problems returns 1."""
    from ..cli import run_cli
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.action == 'plan':
            entries, notes = build_plan(args.model, budget_s=args.budget_s)
            print(format_plan(entries, notes))
            return 0
        if args.action == 'report':
            return 1 if write_report(args.out) else 0
        command = 'python -m logoformer_timm.bench.gpu ' + ' '.join(sys.argv[1:] if argv is None else argv)
        run_plan(args.out, dry_run=args.dry_run, budget_s=args.budget_s, models=args.model, device=args.device,
                 command=os.environ.get('LOGOFORMER_GPU_COMMAND', command),
                 gemm_size=512 if args.dry_run else 8192, copy_bytes=2 ** 20 if args.dry_run else 2 ** 30)
        with open(os.path.join(args.out, 'results.json')) as f:
            problems = check_results(json.load(f))
        return 1 if problems else 0
    return run_cli(body)


if __name__ == '__main__':
    sys.exit(main())
