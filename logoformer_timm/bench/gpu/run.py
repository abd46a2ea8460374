"""Running the GPU benchmark's plan: the matmul peak per precision and the copy bandwidth (measured before and
after the models), every planned entry within the time budget (memory predicted from batch 1, an out-of-memory
error failing only its entry), and ``run_plan(dry_run=True)``: the same code on CPU with fake timings, fake peaks
and a mocked ``torch.cuda``."""
import contextlib
import itertools
import os
import statistics
import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple
from unittest import mock

import timm
import torch

from ..config import BenchConfig, BenchmarkError
from ..counting import count_model
from ..memory import is_oom
from ..models import ModelSpec, resolve_models
from ..runner import benchmark, measure
from ..timing import copy_bandwidth, gemm_peak, matmul_settings, percentile, time_steps
from .plan import (
    ASSUMED_COPY_GBPS, ASSUMED_DEVICE, ASSUMED_GFLOPS, ASSUMED_MEMORY_MB, DEFAULT_BUDGET_S, JOINT, MEMORY_HEADROOM,
    PLAN_BUDGET, PRECISIONS, Entry, build_plan, format_plan, predicted_mb)
from .report import format_ceilings, save_results, set_fractions, write_report

__all__ = ['run_plan', 'DRY_RUN_ABOVE_PEAK']

# the dry run fakes this entry above its own peak (as TF32 convolutions can outrun the float32 matmul), so that
# the report's handling of an impossible fraction is checked too
DRY_RUN_ABOVE_PEAK = 'logoformer_tiny 16x112x112 b32 float32 eager inference'


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
                    batch_size=cfg.batch_size, peak_mem_mb=predicted_mb(e, None), warm_steps=cfg.num_warm_iter,
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
    log(f'ceilings at the start: {format_ceilings(results["ceilings_start"])}')
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
        if e.status != 'planned' and not e.reason.startswith(PLAN_BUDGET):
            continue
        e.status, e.reason = 'planned', ''
        setting = (e.model, e.frames, e.img_size, e.precision, e.compile, e.mode)
        # eager estimates are scaled by how the eager entries so far compared with theirs (compile times are not)
        scale = 1. if e.compile or not estimated else min(4., max(.5, spent / estimated))
        left = budget_s - elapsed()
        predicted = predicted_mb(e, batch1_mb.get(setting))
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
        save_results(out, results)  # after every entry: a run cut short keeps what it measured
    results['ceilings_end'] = _ceilings(dev, dry_run, gemm_size, copy_bytes)
    log(f'ceilings at the end: {format_ceilings(results["ceilings_end"])}')
    results['entries'] = [asdict(x) for x in entries]
    results['wall_s'] = elapsed()
    set_fractions(results)
    save_results(out, results)
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

