"""Measure one model: time and memory per mode, per part, in a fresh process, with a smaller batch on OOM; and
:func:`benchmark`, one result row per model."""
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import LogoFormer
from .config import NUM_CLASSES, BenchConfig, BenchmarkError
from .counting import COUNTER_NAME, LOGOFORMER_PARTS, count_model
from .memory import MemoryMeter, is_oom
from .models import ModelSpec, build_model, protocol_clip
from .profiling import profile_parts
from ..device import resolve_device
from .timing import autocast, percentile, precision_dtypes, set_peak_fractions, time_steps, warm_up

__all__ = ['measure', 'measure_parts', 'measure_with_retry', 'environment', 'load_avg', 'benchmark']


def _to_channels_last(model: nn.Module) -> nn.Module:
    """channels_last_3d for 5-D weights and channels_last for 4-D ones (a per-frame 2-D stem has both)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.ndim == 5:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
        elif tensor.ndim == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def measure(spec: ModelSpec, mode: str, cfg: BenchConfig, isolated: bool = False) -> Dict[str, Any]:
    """Time one model in one mode ('inference' or 'train') in this process; returns the mode's columns."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dtype, amp_dtype = precision_dtypes(cfg.precision, device)
    meter = MemoryMeter(device, isolated)
    meter.start()
    model = build_model(spec, cfg.num_frames, cfg.img_size, device=device).to(dtype=dtype)
    if cfg.channels_last:
        _to_channels_last(model)
    model.train(mode == 'train')
    run_model = torch.compile(model, backend=cfg.torchcompile) if cfg.torchcompile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if mode == 'train' else None
    memory_format = torch.channels_last_3d if cfg.channels_last else torch.contiguous_format
    x = torch.rand(cfg.batch_size, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=memory_format)
    target = torch.randint(0, NUM_CLASSES, (cfg.batch_size,), device=device)

    def infer_step():
        with torch.inference_mode(), autocast(device, amp_dtype):
            return run_model(x)

    def train_step():
        with autocast(device, amp_dtype):
            loss = F.cross_entropy(run_model(x).float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step = infer_step if mode == 'inference' else train_step
    warm_steps, steady = warm_up(step, cfg.num_warm_iter, device, until_steady=bool(cfg.torchcompile))
    times = time_steps(step, 0, cfg.num_bench_iter, device)
    median = statistics.median(times)
    return dict(
        samples_per_sec=cfg.batch_size / (median / 1e3),
        step_time=median,
        step_time_p10=percentile(times, 10),
        step_time_p90=percentile(times, 90),
        batch_size=cfg.batch_size,
        peak_mem_mb=meter.peak_mb(),
        warm_steps=warm_steps,
        warning='' if steady else f'not steady after {warm_steps} warm-up steps: compile time may be in the timing',
        mem_method=meter.method,
        load_avg_1m=load_avg(),
    )


def measure_parts(spec: ModelSpec, cfg: BenchConfig) -> Dict[str, Any]:
    """Time and peak memory per part of one eager inference forward pass (:mod:`logoformer_timm.bench.profiling`)."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dtype, amp_dtype = precision_dtypes(cfg.precision, device)
    model = build_model(spec, cfg.num_frames, cfg.img_size, device=device).to(dtype=dtype).eval()
    if cfg.channels_last:
        _to_channels_last(model)
    memory_format = torch.channels_last_3d if cfg.channels_last else torch.contiguous_format
    x = torch.rand(cfg.batch_size, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=memory_format)

    def step():
        with torch.inference_mode(), autocast(device, amp_dtype):
            return model(x)

    parts = LOGOFORMER_PARTS if isinstance(model, LogoFormer) else None
    result = profile_parts(model, step, parts, device, num_warm=max(1, cfg.num_warm_iter),
                           num_iter=cfg.num_bench_iter)
    return dict(
        ms_by_part={p.name: p.time_ms for p in result.parts} | {'other': result.other_ms},
        peak_mem_mb_by_part={p.name: p.peak_mem_mb for p in result.parts},
        peak_op_by_part={p.name: p.peak_op for p in result.parts if p.peak_op},
        parts_step_ms=result.step_ms, parts_step_peak_mem_mb=result.step_peak_mem_mb,
        parts_method=f'eager inference forward, batch {cfg.batch_size}; time: {result.time_method}; '
                     f'peak memory per part = the most memory the part allocated above what was live when it '
                     f'started, measured with {result.mem_method}',
    )


def load_avg() -> Optional[float]:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _measure_isolated(spec: ModelSpec, mode: str, cfg: BenchConfig) -> Dict[str, Any]:
    """:func:`measure` in a fresh Python process; an OOM raises MemoryError here (also a killed worker)."""
    job = json.dumps(dict(spec=asdict(spec), mode=mode, cfg=asdict(cfg)))
    proc = subprocess.run(
        [sys.executable, '-c', 'from logoformer_timm.bench.runner import _worker; _worker()'],
        input=job, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        result = json.loads(lines[-1])
        if 'error' not in result:
            return result
        if result.get('oom'):
            raise MemoryError(result['error'])
        raise RuntimeError(f'{spec.label} {mode} failed in the worker: {result["error"]}')
    if proc.returncode in (-9, 137):  # killed, on Linux usually by the out-of-memory killer
        raise MemoryError(f'worker killed (signal 9) at batch {cfg.batch_size}')
    raise RuntimeError(f'{spec.label} {mode}: worker exited with {proc.returncode}:\n{proc.stderr[-2000:]}')


def _worker() -> None:
    """Entry point of the fresh process used by :func:`_measure_isolated`: a JSON job on stdin, JSON on stdout."""
    job = json.loads(sys.stdin.read())
    try:
        spec, cfg = ModelSpec(**job['spec']), BenchConfig(**job['cfg'])
        if job['mode'] == 'parts':
            result = measure_parts(spec, cfg)
        else:
            result = measure(spec, job['mode'], cfg, isolated=True)
    except Exception as e:  # reported to the parent, which decides (OOM retry or error)
        result = dict(error=f'{type(e).__name__}: {e}', oom=is_oom(e))
    print(json.dumps(result))


def measure_with_retry(spec: ModelSpec, mode: str, cfg: BenchConfig, log: Callable[[str], None] = print) -> Dict:
    """:func:`measure` (in a fresh process if ``cfg.isolate``), halving the batch on out-of-memory errors."""
    batch, notes = cfg.batch_size, []
    while True:
        run_cfg = replace(cfg, batch_size=batch)
        try:
            if cfg.isolate:
                result = _measure_isolated(spec, mode, run_cfg)
            else:
                result = measure(spec, mode, run_cfg)
            result['batch_note'] = '; '.join(notes)
            return result
        except (MemoryError, RuntimeError) as e:
            if not (isinstance(e, MemoryError) or is_oom(e)) or batch == 1:
                raise
            notes.append(f'out of memory at batch {batch}, retried with {batch // 2}')
            log(f'  {spec.label} {mode}: {notes[-1]}')
            batch //= 2
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------
# runs


def environment(cfg: BenchConfig) -> Dict[str, Any]:
    """The columns every row carries: versions, device name, threads, precision and settings."""
    device = torch.device(cfg.device)
    if device.type == 'cuda':
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = _cpu_name()
    return dict(
        flop_counter=COUNTER_NAME,
        device=cfg.device,
        device_name=device_name,
        threads=cfg.threads or torch.get_num_threads(),
        precision=cfg.precision,
        channels_last=cfg.channels_last,
        torchcompile=cfg.torchcompile or '',
        torch_version=torch.__version__,
        timm_version=timm.__version__,
    )


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return f'{line.split(":", 1)[1].strip()} ({os.cpu_count()} logical cores)'
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark(
        specs: Sequence[ModelSpec],
        cfg: BenchConfig,
        modes: Sequence[str] = ('inference',),
        detail: bool = False,
        gemm_gflops: Optional[float] = None,
        sweep_label: str = '',
        log: Callable[[str], None] = print,
        measure_fn: Optional[Callable[..., Dict[str, Any]]] = None,
        count_fn: Optional[Callable[[ModelSpec, int, int], Any]] = None,
) -> List[Dict[str, Any]]:
    """One result row per model: counts, then timing/memory per mode, with the environment columns.

    ``measure_fn(spec, mode, cfg, log)`` (default :func:`measure_with_retry`) and ``count_fn(spec, frames, size)``
    (default :func:`~logoformer_timm.bench.counting.count_model`) can be replaced, e.g. by a cache or fake timings."""
    env = environment(cfg)
    measure_fn, count_fn = measure_fn or measure_with_retry, count_fn or count_model
    rows = []
    base_cfg = cfg
    for spec in specs:
        clip = protocol_clip(spec) if base_cfg.protocol_clip else None
        cfg = replace(base_cfg, num_frames=clip[0], img_size=clip[1]) if clip else base_cfg
        clip_text = f'{cfg.num_frames}x{cfg.img_size}x{cfg.img_size}'
        try:
            count = count_fn(spec, cfg.num_frames, cfg.img_size)
        except BenchmarkError as e:
            if not spec.peer:
                raise
            # a peer whose architecture cannot take this clip (MAE-DFER's regions at 112x112) is said, not fatal
            log(f'  {spec.label} skipped at {clip_text}: {e}')
            rows.append(dict(model=spec.label, source=spec.source, model_kwargs=spec.kwargs, clip=clip_text,
                             skipped=str(e), sweep=sweep_label, **env))
            continue
        row = dict(
            model=spec.label, source=spec.source, model_kwargs=spec.kwargs, param_count=round(count.param_count, 2),
            infer_gmacs=round(count.infer.gmacs, 3), infer_gflops=round(count.infer.gflops, 3),
            train_gmacs=round(count.train_gmacs, 3), sweep=sweep_label, clip=clip_text,
        )
        if detail:
            row['infer_gmacs_by_part'] = {k: round(v, 3) for k, v in count.detail.items()}
            log(f'  {spec.label}: time and peak memory per part (inference), batch {cfg.batch_size}')
            parts = _measure_isolated(spec, 'parts', cfg) if cfg.isolate else measure_parts(spec, cfg)
            row.update({f'infer_{k}' if k != 'parts_method' else k: v for k, v in parts.items()})
        gmacs = dict(inference=count.infer.gmacs, train=count.train_gmacs)
        for mode in modes:
            prefix = 'infer' if mode == 'inference' else 'train'
            log(f'  {spec.label}: {mode}, batch {cfg.batch_size}, {cfg.num_frames}x{cfg.img_size}x{cfg.img_size}')
            try:
                result = measure_fn(spec, mode, cfg, log)
            except Exception as e:  # a peer from another library failing is reported, not fatal
                if spec.source == 'timm' and not spec.peer:
                    raise
                log(f'  peer {spec.label} failed in {mode}: {type(e).__name__}: {str(e)[:300]}')
                row[f'{prefix}_batch_note'] = f'failed: {type(e).__name__}'
                continue
            achieved = 2 * gmacs[mode] * result['batch_size'] / (result['step_time'] / 1e3)
            row['mem_method'] = result.pop('mem_method')
            result.update(img_size=cfg.img_size, frames=cfg.num_frames, achieved_gflops_per_sec=achieved)
            row.update({f'{prefix}_{k}': v for k, v in result.items()})
        row.update(env)
        rows.append(row)
    set_peak_fractions(rows, gemm_gflops)
    return rows
