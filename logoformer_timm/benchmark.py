"""Video model benchmark: exact GMACs (attention included), step time, memory and efficiency, peers side by side.

timm's ``benchmark.py`` flags and column names, adapted to clips ``(B, C, T, H, W)`` (an extra ``frames``
column, ``channels_last_3d``). Run it as ``logoformer-bench`` (installed) or ``python benchmarks/flops.py`` from a
clone (see ``--help``).

What the numbers are:

* ``infer_gmacs`` / ``infer_gflops``: one clip's forward pass, counted by :data:`~logoformer_timm.flops.COUNTER_NAME`
  (attention matmuls included); ``train_gmacs``: forward + backward of one clip (optimizer step not counted).
* step times: ``num_bench_iter`` steps after ``num_warm_iter`` warm-up steps, median and p10/p90 in ms;
  ``*_samples_per_sec`` = batch size / median step time. ``perf_counter`` on CPU (ops are synchronous there),
  device events recorded around each step and read after a synchronize on accelerators.
* ``*_peak_mem_mb``: memory the model and its steps add. CUDA: ``max_memory_allocated`` minus what was allocated
  before the model was built. CPU: peak resident set size (``VmHWM``, reset before the model is built) minus the
  resident size at that point, measured by default in a fresh process per model and mode, so that memory freed
  by one model cannot hide the next model's peak (see ``mem_method``).
* ``*_achieved_gflops_per_sec``: counted FLOPs per step / median step time; ``*_peak_fraction``: that divided by
  ``gemm_gflops_per_sec``, the best throughput of square matmuls of several sizes, repeated, on the same device,
  threads and precision, measured before and again after the models (the higher of the two). A fraction above 1
  cannot be a result: it is left empty and ``*_warning`` says the measurement failed (machine load, too low a peak).
* ``*_warm_steps``: warm-up steps run; with ``--torchcompile`` warm-up continues until two consecutive steps agree
  within 10 %, and ``*_warning`` says so when they never did (compile time may then be in the step times).
"""
import argparse
import ast
import csv
import fnmatch
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from .flops import COUNTER_NAME, LOGOFORMER_PARTS, count_flops, flops_by_part
from .models import LogoFormer
from .profiling import profile_parts

__all__ = [
    'BenchConfig', 'ModelSpec', 'BenchmarkError', 'parse_model_kwargs', 'resolve_models', 'peer_specs',
    'count_model', 'gemm_peak', 'set_peak_fractions', 'warm_up', 'benchmark', 'sweep', 'sweep_table',
    'write_results', 'format_table', 'plot_sweep', 'environment', 'main', 'COLUMNS', 'SWEEP_PARAMS',
    'measure_parts', 'parse_grid', 'grid_configs',
]

PRECISIONS = ('float32', 'bfloat16', 'float16', 'amp', 'amp_bfloat16', 'amp_float16')
SWEEP_PARAMS = ('num_frames', 'img_size')
GRID_PARAMS = ('clip', 'batch_size', 'precision', 'torchcompile')
BENCH_MODES = ('inference', 'train')
NUM_CLASSES = 7

# the documented result columns, in output order (--detail adds the *_by_part columns of DETAIL_COLUMN_DOCS)
_MODE_COLUMNS = (
    'samples_per_sec', 'step_time', 'step_time_p10', 'step_time_p90', 'batch_size', 'img_size', 'frames',
    'peak_mem_mb', 'achieved_gflops_per_sec', 'peak_fraction', 'warm_steps', 'warning', 'batch_note', 'load_avg_1m')
COLUMNS = (
    'model', 'source', 'model_kwargs', 'param_count', 'infer_gmacs', 'infer_gflops', 'train_gmacs',
    *[f'infer_{c}' for c in _MODE_COLUMNS], *[f'train_{c}' for c in _MODE_COLUMNS],
    'sweep', 'flop_counter', 'mem_method', 'gemm_gflops_per_sec', 'device', 'device_name', 'threads', 'precision',
    'channels_last', 'torchcompile', 'torch_version', 'timm_version',
)
COLUMN_DOCS = {
    'param_count': 'parameters in millions',
    'infer_gmacs': 'multiply-adds of one clip forward, 1e9 (what DFER papers print as "GFLOPs")',
    'infer_gflops': 'FLOPs of one clip forward, 1e9 (= 2 x GMACs)',
    'train_gmacs': 'multiply-adds of one clip forward + backward, 1e9',
    'step_time': 'median step time (ms); _p10/_p90 the 10th/90th percentiles',
    'samples_per_sec': 'batch size / median step time',
    'peak_mem_mb': 'memory the model and its steps add (MB, 1e6 bytes); see mem_method',
    'achieved_gflops_per_sec': 'counted FLOPs per step / median step time',
    'peak_fraction': 'achieved GFLOP/s / gemm_gflops_per_sec; empty (with a warning) when above 1',
    'warm_steps': 'warm-up steps run before timing (more than --num-warm-iter: compiled until steady)',
    'warning': 'why a figure of the row is not to be trusted (above the matmul peak, compile not steady)',
    'batch_note': 'set when an out-of-memory error forced a smaller batch',
    'load_avg_1m': '1-minute load average of the machine right after the measurement (other jobs add noise)',
}
DETAIL_COLUMN_DOCS = {
    'infer_gmacs_by_part': 'GMACs of one clip per part; other = the rest',
    'infer_ms_by_part': 'ms per part in an eager inference pass (mean of num_bench_iter passes); other = outside the '
                        'parts (position embedding, norms, residual adds, pooling)',
    'infer_peak_mem_mb_by_part': 'per part: the most memory it allocated above what was live when it started (MB)',
    'infer_peak_op_by_part': 'per part: the operators running when it reached that peak (CPU profiler only)',
    'infer_parts_step_ms': 'the whole pass, timed in the same passes as the parts',
    'infer_parts_step_peak_mem_mb': 'the whole pass: the most memory allocated above what was live at its start',
    'parts_method': 'how the per-part time and memory were measured',
}


class BenchmarkError(Exception):
    """A user error (bad flag, unknown model, missing device or extra): printed without a traceback."""


@dataclass
class BenchConfig:
    """Everything that defines one measurement except the model."""
    num_frames: int = 16
    img_size: int = 112
    batch_size: int = 2
    device: str = 'cpu'
    precision: str = 'float32'
    channels_last: bool = False
    torchcompile: Optional[str] = None
    num_warm_iter: int = 2
    num_bench_iter: int = 10
    threads: Optional[int] = None
    isolate: bool = True
    gemm_size: int = 2048


@dataclass
class ModelSpec:
    """A model to benchmark: a timm name with kwargs, or a peer from torchvision / transformers."""
    name: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    source: str = 'timm'

    @property
    def label(self) -> str:
        if not self.kwargs:
            return self.name
        return f'{self.name}[{",".join(f"{k}={_format_value(v)}" for k, v in self.kwargs.items())}]'


def _format_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ','.join(str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------------------------------------------
# models


def parse_model_kwargs(items: Sequence[str]) -> Dict[str, Any]:
    """Parse ``k=v`` strings: Python literals (``2``, ``0.1``, ``True``, ``(2,4,4)``), ``a,b`` lists, else strings."""
    out = {}
    for item in items:
        key, sep, text = item.partition('=')
        if not sep or not key.strip():
            raise BenchmarkError(f'--model-kwargs expects key=value items, got {item!r} (e.g. block_types=joint).')
        out[key.strip()] = _parse_value(text.strip())
    return out


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if ',' in text:
        return tuple(_parse_value(part.strip()) for part in text.split(',') if part.strip())
    return text


def _hf_builders() -> Dict[str, Callable[[int, int], nn.Module]]:
    import transformers as hf

    def build(config_cls, model_cls, **extra):
        return lambda frames, size: _HFVideo(model_cls(config_cls(
            image_size=size, num_frames=frames, num_labels=NUM_CLASSES, **extra)))

    return {
        'transformers/vivit': build(hf.VivitConfig, hf.VivitForVideoClassification),
        'transformers/videomae': build(hf.VideoMAEConfig, hf.VideoMAEForVideoClassification),
        'transformers/timesformer': build(hf.TimesformerConfig, hf.TimesformerForVideoClassification),
    }


class _HFVideo(nn.Module):
    """A transformers video classifier taking ``(B, C, T, H, W)`` like every other model here."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x.transpose(1, 2)).logits  # transformers wants (B, T, C, H, W)


TORCHVISION_PEERS = ('r3d_18', 'r2plus1d_18', 'swin3d_t')
TRANSFORMERS_PEERS = ('vivit', 'videomae', 'timesformer')
PEER_NAMES = tuple(f'torchvision/{n}' for n in TORCHVISION_PEERS) + tuple(
    f'transformers/{n}' for n in TRANSFORMERS_PEERS)


def peer_specs() -> Tuple[List[ModelSpec], List[str]]:
    """The installed peers (random weights) and a message per peer that is missing."""
    specs, missing = [], []
    for name in PEER_NAMES:
        package = name.split('/')[0]
        try:
            __import__(package)
        except ImportError:
            missing.append(f'{name}: {package} is not installed (pip install "logoformer-timm[bench]")')
            continue
        specs.append(ModelSpec(name, source=package))
    return specs, missing


def _split_label(label: str) -> Tuple[str, Dict[str, Any]]:
    """``name[k=v,k2=a,b]`` (the labels the harness prints) -> (name, kwargs)."""
    if not label.endswith(']') or '[' not in label:
        return label, {}
    name, inner = label[:-1].split('[', 1)
    items = []
    for piece in inner.split(','):  # a piece without '=' continues the previous value (local_window=2,4,4)
        if '=' in piece or not items:
            items.append(piece)
        else:
            items[-1] += ',' + piece
    return name, parse_model_kwargs(items)


def resolve_models(patterns: Sequence[str], model_kwargs: Optional[Dict[str, Any]] = None) -> List[ModelSpec]:
    """Registered timm names or wildcards (``logoformer_*``) and peer names, each with ``model_kwargs``.

    ``name[k=v,...]`` (as printed in the results) gives one model its own kwargs on top of ``model_kwargs``.
    """
    specs = []
    for label in patterns:
        pattern, own_kwargs = _split_label(label)
        model_kwargs_here = {**(model_kwargs or {}), **own_kwargs}
        peers = fnmatch.filter(PEER_NAMES, pattern)
        names = timm.list_models(pattern) if any(c in pattern for c in '*?[') else (
            [pattern] if pattern in timm.list_models() else [])
        if peers:
            specs += [ModelSpec(n, dict(model_kwargs_here), source=n.split('/')[0]) for n in peers]
        if names:
            specs += [ModelSpec(n, dict(model_kwargs_here)) for n in names]
        if not peers and not names:
            raise BenchmarkError(
                f'no model matches {pattern!r}: give a registered timm name or wildcard (e.g. logoformer_*) '
                f'or a peer ({", ".join(PEER_NAMES)}).')
    return specs


def build_model(spec: ModelSpec, num_frames: int, img_size: int, device: Any = 'cpu') -> nn.Module:
    """Build ``spec`` for ``num_frames`` x ``img_size`` clips with random weights on ``device``."""
    if spec.source == 'timm':
        try:
            return timm.create_model(
                spec.name, num_frames=num_frames, img_size=img_size, device=device, **spec.kwargs)
        except TypeError as e:
            raise BenchmarkError(f'cannot build {spec.label}: {e} (is it a video model taking num_frames?)') from e
    if spec.source == 'torchvision':
        import torchvision.models.video as tv_video
        with torch.device(device):
            return getattr(tv_video, spec.name.split('/')[1])(weights=None, num_classes=NUM_CLASSES, **spec.kwargs)
    if spec.source == 'transformers':
        if spec.kwargs:
            raise BenchmarkError(f'--model-kwargs are not supported for the peer {spec.name}.')
        with torch.device(device):
            return _hf_builders()[spec.name](num_frames, img_size)
    raise BenchmarkError(f'unknown model source {spec.source!r}')


@dataclass
class ModelCount:
    """Size and counted cost of one model at one clip size (per clip)."""
    param_count: float
    infer: Any
    train_gmacs: float
    detail: Dict[str, float]


def count_model(spec: ModelSpec, num_frames: int, img_size: int) -> ModelCount:
    """Params (M), forward count, forward+backward GMACs and the per-part GMACs of one clip, on the meta device."""
    model = build_model(spec, num_frames, img_size, device='meta')
    shape = (1, 3, num_frames, img_size, img_size)
    infer = count_flops(model, shape)
    train = count_flops(model, shape, backward=True)
    parts = LOGOFORMER_PARTS if isinstance(model, LogoFormer) else None
    detail = {k: v / 2e9 for k, v in flops_by_part(infer, parts).items()}
    return ModelCount(sum(p.numel() for p in model.parameters()) / 1e6, infer, train.gmacs, detail)


# ---------------------------------------------------------------------------------------------------------------
# device, precision, timing, memory


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``; a clear error when it is not available."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise BenchmarkError(f'--device {name!r} is not a torch device: {e}') from e
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise BenchmarkError(
            f'--device {name} was requested but no CUDA GPU is available to torch {torch.__version__} '
            f'(torch.cuda.is_available() is False); use --device cpu.')
    if device.type not in ('cpu', 'cuda'):
        module = getattr(torch, device.type, None)
        if module is None or not module.is_available():
            raise BenchmarkError(f'--device {name} is not available here; use --device cpu.')
    return device


def _precision(precision: str, device: torch.device) -> Tuple[torch.dtype, Optional[torch.dtype]]:
    """(parameter/input dtype, autocast dtype or None) for ``--precision``."""
    if precision == 'amp':
        return torch.float32, torch.float16 if device.type == 'cuda' else torch.bfloat16
    if precision.startswith('amp_'):
        return torch.float32, getattr(torch, precision[4:])
    return getattr(torch, precision), None


def _autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def _synchronize(device: torch.device) -> None:
    if device.type != 'cpu':
        torch.accelerator.synchronize(device)


def warm_up(step: Callable[[], Any], num_warm: int, device: torch.device, until_steady: bool = False,
            max_extra: int = 20, tolerance: float = 0.1) -> Tuple[int, bool]:
    """Run ``step`` ``num_warm`` times; ``until_steady``: then on until two consecutive steps agree within
    ``tolerance`` (at most ``max_extra`` more). Returns (steps run, whether the last two agreed)."""
    times: List[float] = []
    while len(times) < num_warm or (until_steady and len(times) < num_warm + max_extra):
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        steady = len(times) >= 2 and abs(times[-1] - times[-2]) <= tolerance * min(times[-2:])
        if until_steady and steady and len(times) >= num_warm:
            return len(times), True
    return len(times), not until_steady


def time_steps(step: Callable[[], Any], num_warm: int, num_iter: int, device: torch.device) -> List[float]:
    """Run ``step`` ``num_warm`` times, then time ``num_iter`` steps one by one; times in ms."""
    for _ in range(num_warm):
        step()
    _synchronize(device)
    if device.type == 'cpu':
        times = []
        for _ in range(num_iter):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
        return times
    # events are recorded on the device's stream around each step and read only after a synchronize
    events = [(torch.Event(device=device, enable_timing=True), torch.Event(device=device, enable_timing=True))
              for _ in range(num_iter)]
    for start, end in events:
        start.record()
        step()
        end.record()
    _synchronize(device)
    return [start.elapsed_time(end) for start, end in events]


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def gemm_peak(device: torch.device, precision: str, size: int = 2048, iters: int = 5) -> float:
    """Best dense matmul throughput (GFLOP/s) in ``precision`` on ``device`` with the current thread count: square
    matrices of ``size`` / 4, / 2 and ``size``, ``iters`` timed repeats each (one size or one noisy run can
    come out below what a model's own kernels reach)."""
    dtype, amp_dtype = _precision(precision, device)
    best = 0.
    for n in sorted({max(1, size // 4), max(1, size // 2), size}):
        a = torch.randn(n, n, device=device, dtype=amp_dtype or dtype)
        b = torch.randn(n, n, device=device, dtype=amp_dtype or dtype)
        times = time_steps(lambda: torch.mm(a, b), 1, iters, device)
        best = max(best, 2 * n ** 3 / (max(min(times), 1e-6) / 1e3) / 1e9)
    return best


def set_peak_fractions(rows: Sequence[Dict[str, Any]], gemm_gflops: Optional[float]) -> None:
    """Set ``gemm_gflops_per_sec`` and each mode's ``peak_fraction`` in ``rows``; a fraction above 1 is a failed
    measurement, so it is left empty and the row's ``*_warning`` says so."""
    for row in rows:
        row['gemm_gflops_per_sec'] = gemm_gflops
        for prefix in ('infer', 'train'):
            achieved = row.get(f'{prefix}_achieved_gflops_per_sec')
            if achieved is None:
                continue
            fraction = achieved / gemm_gflops if gemm_gflops else None
            notes = [n for n in (row.get(f'{prefix}_warning') or '').split('; ') if n and 'matmul peak' not in n]
            if fraction is not None and fraction > 1:
                notes.append(f'{achieved:.1f} GFLOP/s is {fraction:.0%} of the measured matmul peak: a measurement '
                             f'problem (machine load or a low peak), not a result')
                fraction = None
            row[f'{prefix}_peak_fraction'] = fraction
            row[f'{prefix}_warning'] = '; '.join(notes)


_STATUS = '/proc/self/status'


def _proc_kb(key: str) -> Optional[int]:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryMeter:
    """Peak memory added between :meth:`start` and :meth:`peak_mb` (CUDA allocator, or the process's RSS on CPU)."""

    def __init__(self, device: torch.device, isolated: bool):
        self.device = device
        self.isolated = isolated
        self.base = 0

    @property
    def method(self) -> str:
        if self.device.type == 'cuda':
            return 'cuda max_memory_allocated increase'
        where = 'fresh process per model and mode' if self.isolated else 'shared process, a lower bound'
        return f'cpu peak RSS increase ({where})'

    def start(self) -> None:
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.device.type == 'cpu':
            try:  # '5' resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
                with open('/proc/self/clear_refs', 'w') as f:
                    f.write('5')
            except OSError:
                pass
            self.base = _proc_kb('VmRSS') or 0

    def peak_mb(self) -> Optional[float]:
        if self.device.type == 'cuda':
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 1e6
        if self.device.type == 'cpu':
            peak = _proc_kb('VmHWM')
            return None if peak is None else max(0, peak - self.base) * 1024 / 1e6
        return None


def _to_channels_last(model: nn.Module) -> nn.Module:
    """channels_last_3d for 5-D weights and channels_last for 4-D ones (a per-frame 2-D stem has both)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.ndim == 5:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
        elif tensor.ndim == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ('out of memory' in text or "can't allocate memory" in text)


def measure(spec: ModelSpec, mode: str, cfg: BenchConfig, isolated: bool = False) -> Dict[str, Any]:
    """Time one model in one mode ('inference' or 'train') in this process; returns the mode's columns."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dtype, amp_dtype = _precision(cfg.precision, device)
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
        with torch.inference_mode(), _autocast(device, amp_dtype):
            return run_model(x)

    def train_step():
        with _autocast(device, amp_dtype):
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
        step_time_p10=_percentile(times, 10),
        step_time_p90=_percentile(times, 90),
        batch_size=cfg.batch_size,
        peak_mem_mb=meter.peak_mb(),
        warm_steps=warm_steps,
        warning='' if steady else f'not steady after {warm_steps} warm-up steps: compile time may be in the timing',
        mem_method=meter.method,
        load_avg_1m=_load_avg(),
    )


def measure_parts(spec: ModelSpec, cfg: BenchConfig) -> Dict[str, Any]:
    """Time and peak memory per part of one eager inference forward pass (:mod:`logoformer_timm.profiling`)."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dtype, amp_dtype = _precision(cfg.precision, device)
    model = build_model(spec, cfg.num_frames, cfg.img_size, device=device).to(dtype=dtype).eval()
    if cfg.channels_last:
        _to_channels_last(model)
    memory_format = torch.channels_last_3d if cfg.channels_last else torch.contiguous_format
    x = torch.rand(cfg.batch_size, 3, cfg.num_frames, cfg.img_size, cfg.img_size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=memory_format)

    def step():
        with torch.inference_mode(), _autocast(device, amp_dtype):
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


def _load_avg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _measure_isolated(spec: ModelSpec, mode: str, cfg: BenchConfig) -> Dict[str, Any]:
    """:func:`measure` in a fresh Python process; an OOM raises MemoryError here (also a killed worker)."""
    job = json.dumps(dict(spec=asdict(spec), mode=mode, cfg=asdict(cfg)))
    proc = subprocess.run(
        [sys.executable, '-c', 'from logoformer_timm.benchmark import _worker; _worker()'],
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
        result = dict(error=f'{type(e).__name__}: {e}', oom=_is_oom(e))
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
            if not (isinstance(e, MemoryError) or _is_oom(e)) or batch == 1:
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
) -> List[Dict[str, Any]]:
    """One result row per model: counts, then timing/memory per mode, with the environment columns."""
    env = environment(cfg)
    rows = []
    for spec in specs:
        count = count_model(spec, cfg.num_frames, cfg.img_size)
        row = dict(
            model=spec.label, source=spec.source, model_kwargs=spec.kwargs, param_count=round(count.param_count, 2),
            infer_gmacs=round(count.infer.gmacs, 3), infer_gflops=round(count.infer.gflops, 3),
            train_gmacs=round(count.train_gmacs, 3), sweep=sweep_label,
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
                result = measure_with_retry(spec, mode, cfg, log)
            except Exception as e:  # a peer from another library failing is reported, not fatal
                if spec.source == 'timm':
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


def _joint_twin(spec: ModelSpec) -> Optional[ModelSpec]:
    if spec.kwargs.get('block_types') in ('joint', ('joint',)):
        return None
    return ModelSpec(spec.name, {**spec.kwargs, 'block_types': 'joint'}, spec.source)


def parse_sweep(text: str) -> Tuple[str, List[int]]:
    """``num_frames=8,16,32`` -> ('num_frames', [8, 16, 32])."""
    key, sep, values = text.partition('=')
    if not sep or key not in SWEEP_PARAMS:
        raise BenchmarkError(f'--sweep expects one of {SWEEP_PARAMS} as name=v1,v2,..., got {text!r}.')
    try:
        points = [int(v) for v in values.split(',') if v.strip()]
    except ValueError as e:
        raise BenchmarkError(f'--sweep {key} values must be integers, got {values!r}.') from e
    if not points or min(points) < 1:
        raise BenchmarkError(f'--sweep {key} needs positive integers, got {values!r}.')
    return key, points


def sweep(
        specs: Sequence[ModelSpec],
        param: str,
        points: Sequence[int],
        cfg: BenchConfig,
        modes: Sequence[str] = ('inference',),
        gemm_gflops: Optional[float] = None,
        log: Callable[[str], None] = print,
) -> List[Dict[str, Any]]:
    """Each LOGO-Former spec and its same-width ``block_types=joint`` twin at every point of ``param``."""
    models = []
    for spec in specs:
        if spec.source != 'timm' or not spec.name.startswith('logoformer'):
            continue
        models += [spec] + [s for s in [_joint_twin(spec)] if s]
    if not models:
        raise BenchmarkError('--sweep compares LOGO-Former models with their joint twin: select a logoformer_* model.')
    rows = []
    for point in points:
        point_cfg = replace(cfg, **{param: point})
        rows += benchmark(models, point_cfg, modes, gemm_gflops=gemm_gflops, sweep_label=f'{param}={point}', log=log)
    return rows


def parse_grid(text: str) -> Tuple[str, List[Any]]:
    """``clip=16x112,32x224`` (frames x size), ``batch_size=1,8``, ``precision=float32,amp_bfloat16`` or
    ``torchcompile=none,inductor`` -> (name, values)."""
    key, sep, values = text.partition('=')
    items = [v.strip().lower() for v in values.split(',') if v.strip()]
    if not sep or key not in GRID_PARAMS or not items:
        raise BenchmarkError(f'--grid expects one of {GRID_PARAMS} as name=v1,v2,..., got {text!r}.')
    if key == 'precision':
        if not set(items) <= set(PRECISIONS):
            raise BenchmarkError(f'--grid precision values must be among {", ".join(PRECISIONS)}, got {values!r}.')
        return key, items
    if key == 'torchcompile':
        return key, [None if v == 'none' else v for v in items]
    try:
        parsed = [tuple(int(n) for n in v.split('x')) if key == 'clip' else (int(v),) for v in items]
    except ValueError:
        parsed = []
    if not parsed or any(len(p) != (2 if key == 'clip' else 1) or min(p) < 1 for p in parsed):
        expected = 'FRAMESxSIZE items (16x112,32x224)' if key == 'clip' else 'positive integers'
        raise BenchmarkError(f'--grid {key} needs {expected}, got {values!r}.')
    return key, parsed if key == 'clip' else [p[0] for p in parsed]


def grid_configs(cfg: BenchConfig, grids: Sequence[Tuple[str, List[Any]]]) -> List[Tuple[str, BenchConfig]]:
    """Every combination of the ``--grid`` values, as (label, config); later grids vary fastest."""
    out = [('', cfg)]
    for key, values in grids:
        step = []
        for label, base in out:
            for value in values:
                if key == 'clip':
                    point = replace(base, num_frames=value[0], img_size=value[1])
                    text = f'{value[0]}x{value[1]}'
                else:
                    point = replace(base, **{key: value})
                    text = 'none' if value is None else str(value)
                step.append((f'{label} {key}={text}'.strip(), point))
        out = step
    return out


def sweep_table(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per sweep point and LOGO-Former model: its GMACs, time and memory beside its joint twin's."""
    by_key = {(r['sweep'], r['model']): r for r in rows if r.get('sweep')}
    table = []
    for (point, label), row in by_key.items():
        if 'block_types=joint' in label:
            continue
        spec_kwargs = {**row['model_kwargs'], 'block_types': 'joint'}
        joint = by_key.get((point, ModelSpec(label.split('[')[0], spec_kwargs).label))
        if joint is None:
            continue
        param, value = point.split('=')
        entry = dict(sweep=param, point=int(value), model=label, joint_model=joint['model'],
                     gmacs=row['infer_gmacs'], joint_gmacs=joint['infer_gmacs'],
                     gmacs_ratio=joint['infer_gmacs'] / row['infer_gmacs'])
        for prefix in ('infer', 'train'):
            if f'{prefix}_step_time' in row:
                entry[f'{prefix}_ms'] = row[f'{prefix}_step_time']
                entry[f'joint_{prefix}_ms'] = joint[f'{prefix}_step_time']
                entry[f'{prefix}_time_ratio'] = joint[f'{prefix}_step_time'] / row[f'{prefix}_step_time']
                entry[f'{prefix}_mem_mb'] = row[f'{prefix}_peak_mem_mb']
                entry[f'joint_{prefix}_mem_mb'] = joint[f'{prefix}_peak_mem_mb']
        table.append(entry)
    return table


# ---------------------------------------------------------------------------------------------------------------
# output


def _row_columns(rows: Sequence[Dict[str, Any]]) -> List[str]:
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    extra = [c for r in rows for c in r if c not in COLUMNS]
    return [c for c in COLUMNS if c in present] + list(dict.fromkeys(extra))


def _cell(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.4g}' if abs(value) < 1 else f'{value:.2f}'
    if isinstance(value, dict):
        return '; '.join(f'{k}={_cell(v)}' for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return ','.join(str(v) for v in value)
    return str(value)


def write_results(rows: Sequence[Dict[str, Any]], path: str, fmt: str, header: str = '', notes: str = '') -> None:
    """Write the rows as csv (every column), json (``command``, ``notes`` and every row under ``results``) or
    markdown (the command, notes, the stdout summary, the sweep, the detail, and every column)."""
    columns = _row_columns(rows)
    with open(path, 'w', newline='') as f:
        if fmt == 'json':
            json.dump(dict(command=header, notes=notes, results=list(rows)), f, indent=2, default=str)
            f.write('\n')
        elif fmt == 'csv':
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows({c: _cell(r.get(c)) for c in columns} for r in rows)
        elif fmt == 'md':
            f.write(f'Command: `{header}`\n\n{notes}\n\n' if header else '')
            f.write('## Summary\n\n' + format_table(rows, markdown=True) + '\n')
            table = sweep_table(rows)
            if table:
                f.write('## Sweep: LOGO-Former vs its block_types=joint twin\n\n' + format_sweep(table, True) + '\n')
            if any(r.get('infer_gmacs_by_part') for r in rows):
                f.write('## By part: GMACs, time and peak memory\n\n' + format_detail(rows, True) + '\n\n')
            f.write('## All columns\n\n' + _render(columns, [[_cell(r.get(c)) for c in columns] for r in rows],
                                                      markdown=True) + '\n')
        else:
            raise BenchmarkError(f'--results-format must be csv, json or md, got {fmt!r}.')


def _render(headers: Sequence[str], cells: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """A table as aligned text (first column left-aligned) or as GitHub markdown."""
    if markdown:
        lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
        lines += ['| ' + ' | '.join(c.replace('|', '/') for c in row) + ' |' for row in cells]
        return '\n'.join(lines) + '\n'
    table = [list(headers)] + [list(row) for row in cells]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return '\n'.join('  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in table)


_STDOUT_COLUMNS = (
    ('model', 'model', 's'), ('grid', 'grid point', 's'), ('param_count', 'params (M)', '.2f'), ('infer_gmacs', 'GMACs', '.2f'),
    ('infer_gflops', 'GFLOPs', '.2f'), ('infer_step_time', 'infer ms', '.1f'), ('infer_step_time_p10', 'p10', '.1f'),
    ('infer_step_time_p90', 'p90', '.1f'), ('infer_samples_per_sec', 'infer clips/s', '.2f'),
    ('infer_peak_mem_mb', 'infer MB', '.0f'), ('infer_achieved_gflops_per_sec', 'GFLOP/s', '.1f'),
    ('infer_peak_fraction', '% peak', '.1%'), ('train_step_time', 'train ms', '.1f'),
    ('train_samples_per_sec', 'train clips/s', '.2f'), ('train_peak_mem_mb', 'train MB', '.0f'),
    ('train_peak_fraction', 'train % peak', '.1%'), ('infer_batch_note', 'note', 's'),
    ('train_batch_note', 'train note', 's'), ('infer_warning', 'warning', 's'), ('train_warning', 'train warning', 's'),
)


def format_table(rows: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    """The readable summary table (the columns present in ``rows``)."""
    cols = [(k, h, f) for k, h, f in _STDOUT_COLUMNS if any(r.get(k) not in (None, '') for r in rows)]
    cells = [['' if r.get(k) is None else format(r[k], f) for k, _, f in cols] for r in rows]
    return _render([h for _, h, _ in cols], cells, markdown)


def format_detail(rows: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    """Per part (stem, token embedding, local/global/joint attention, MLP, head): GMACs and their share, and when
    measured the time, share of the pass, peak memory above the part's start and the operator at that peak."""
    blocks, methods = [], []
    for r in rows:
        gmacs = r.get('infer_gmacs_by_part') or {}
        ms, mem = r.get('infer_ms_by_part') or {}, r.get('infer_peak_mem_mb_by_part') or {}
        ops, step = r.get('infer_peak_op_by_part') or {}, r.get('infer_parts_step_ms')
        total = sum(gmacs.values()) or 1.
        headers = ['part', 'GMACs', '% GMACs'] + (['ms', '% time', 'peak MB', 'peak reached in'] if ms else [])
        cells = []
        for name in dict.fromkeys([*gmacs, *ms]):
            row = [name, _fmt(gmacs.get(name), '.3f'), _fmt(gmacs[name] / total if name in gmacs else None, '.1%')]
            if ms:
                row += [_fmt(ms.get(name), '.2f'), _fmt(ms[name] / step if name in ms and step else None, '.1%'),
                        _fmt(mem.get(name), '.1f'), ops.get(name, '')]
            cells.append(row)
        if ms:
            cells.append(['whole pass', _fmt(sum(gmacs.values()), '.3f'), '100.0%', _fmt(step, '.2f'), '100.0%',
                          _fmt(r.get('infer_parts_step_peak_mem_mb'), '.1f'), ''])
        title = r['model'] + (f' ({r["grid"]})' if r.get('grid') else '')
        blocks.append(f'{title}:\n' + _render(headers, cells, markdown))
        if r.get('parts_method'):
            methods.append(r['parts_method'])
    methods = list(dict.fromkeys(methods))
    return '\n\n'.join(blocks + [f'method: {m}' for m in methods])


def format_sweep(table: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    """The sweep: per point, LOGO-Former vs joint GMACs, time and memory, with ratios joint / LOGO-Former."""
    prefix = 'infer' if any('infer_ms' in e for e in table) else 'train'
    headers = ['point', 'model', 'GMACs', 'joint GMACs', 'x', f'{prefix} ms', 'joint ms', 'x', 'MB', 'joint MB', 'x']
    cells = []
    for e in table:
        mem, joint_mem = e.get(f'{prefix}_mem_mb'), e.get(f'joint_{prefix}_mem_mb')
        cells.append([
            f'{e["sweep"]}={e["point"]}', e['model'], f'{e["gmacs"]:.2f}', f'{e["joint_gmacs"]:.2f}',
            f'{e["gmacs_ratio"]:.2f}', _fmt(e.get(f'{prefix}_ms'), '.1f'), _fmt(e.get(f'joint_{prefix}_ms'), '.1f'),
            _fmt(e.get(f'{prefix}_time_ratio'), '.2f'), _fmt(mem, '.0f'), _fmt(joint_mem, '.0f'),
            _fmt(joint_mem / mem if mem and joint_mem else None, '.2f')])
    return _render(headers, cells, markdown)


def _fmt(value: Optional[float], spec: str) -> str:
    return '' if value is None else format(value, spec)


def plot_sweep(table: Sequence[Dict[str, Any]], path: str, title: str = '') -> None:
    """GMACs, step time and peak memory against each swept parameter, LOGO-Former vs joint (matplotlib)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise BenchmarkError('--plot needs matplotlib: pip install "logoformer-timm[bench]"') from e
    params = list(dict.fromkeys(e['sweep'] for e in table))
    prefix = 'infer' if any('infer_ms' in e for e in table) else 'train'
    metrics = (('gmacs', 'GMACs per clip'), (f'{prefix}_ms', f'{prefix} step time (ms)'),
               (f'{prefix}_mem_mb', f'{prefix} peak memory (MB)'))
    fig, axes = plt.subplots(len(params), 3, figsize=(13, 3.6 * len(params)), squeeze=False)
    for i, param in enumerate(params):
        for model in dict.fromkeys(e['model'] for e in table if e['sweep'] == param):
            entries = sorted((e for e in table if e['sweep'] == param and e['model'] == model),
                             key=lambda e: e['point'])
            xs = [e['point'] for e in entries]
            for ax, (key, ylabel) in zip(axes[i], metrics):
                ax.plot(xs, [e.get(key) for e in entries], 'o-', label=model)
                ax.plot(xs, [e.get(f'joint_{key}') for e in entries], 's--', label=f'{model} joint')
                ax.set_xlabel(param)
                ax.set_ylabel(ylabel)
                ax.set_xticks(xs)
                ax.grid(alpha=.3)
        axes[i][0].legend(fontsize=8)
    if title:
        fig.suptitle('\n'.join(textwrap.wrap(title, 160)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# CLI


def build_parser(prog: str = 'logoformer-bench') -> argparse.ArgumentParser:
    """timm benchmark.py's flags, for 5-D clips."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--model', '-m', nargs='+', default=['logoformer_*'],
                        help='timm model names or wildcards, or peer names (torchvision/r3d_18, ...)')
    parser.add_argument('--model-kwargs', nargs='*', default=[], metavar='K=V',
                        help='model kwargs, e.g. block_types=joint local_window=2,4,4')
    parser.add_argument('--peers', action='store_true',
                        help=f'add the installed peers ({", ".join(PEER_NAMES)}), random weights')
    parser.add_argument('--bench', choices=('inference', 'train', 'both'), default='inference')
    parser.add_argument('--detail', action='store_true',
                        help='per part (stem, attention, MLP, head): GMACs, and time and peak memory of an inference '
                             'pass (torch.profiler memory events on CPU, allocator statistics on CUDA)')
    parser.add_argument('--num-frames', type=int, default=16)
    parser.add_argument('--img-size', type=int, default=112)
    parser.add_argument('-b', '--batch-size', type=int, default=2)
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--precision', choices=PRECISIONS, default='float32',
                        help='amp = autocast (float16 on cuda, bfloat16 on cpu)')
    parser.add_argument('--channels-last', action='store_true', help='channels_last_3d input and weights')
    parser.add_argument('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND')
    parser.add_argument('--num-warm-iter', type=int, default=2)
    parser.add_argument('--num-bench-iter', type=int, default=10)
    parser.add_argument('--threads', type=int, default=None,
                        help="torch.set_num_threads for the models and the matmul peak; None keeps torch's own count")
    parser.add_argument('--isolate', action=argparse.BooleanOptionalAction, default=None,
                        help='time each model and mode in a fresh process (None: on for cpu, where it makes '
                             'the peak-RSS column per model)')
    parser.add_argument('--gemm-size', type=int, default=None,
                        help='largest matrix size of the peak matmul, also run at 1/2 and 1/4 (None: 2048 on cpu, '
                             '8192 otherwise)')
    parser.add_argument('--sweep', action='append', default=[], metavar='PARAM=V1,V2',
                        help='num_frames=8,16,32,64 or img_size=112,160,224: LOGO-Former vs its joint twin')
    parser.add_argument('--grid', action='append', default=[], metavar='PARAM=V1,V2',
                        help='measure every model at every combination, side by side: clip=16x112,32x224 '
                             'batch_size=1,8 precision=float32,amp_bfloat16 torchcompile=none,inductor')
    parser.add_argument('--plot', default=None, metavar='FILE.png', help='plot the sweep (needs matplotlib)')
    parser.add_argument('--results-file', nargs='+', default=[], metavar='FILE',
                        help='one or more files; the format comes from each extension (.csv, .json, .md)')
    parser.add_argument('--results-format', choices=('csv', 'json', 'md'), default=None,
                        help='format for every results file (None: from its extension, else csv)')
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for name in ('num_frames', 'img_size', 'batch_size', 'num_bench_iter'):
        if getattr(args, name) < 1:
            raise BenchmarkError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}.')
    if args.num_warm_iter < 0:
        raise BenchmarkError(f'--num-warm-iter must be >= 0, got {args.num_warm_iter}.')
    if args.threads is not None and args.threads < 1:
        raise BenchmarkError(f'--threads must be >= 1, got {args.threads}.')
    if args.grid and args.sweep:
        raise BenchmarkError('--grid and --sweep are separate runs: give one of them.')
    if args.plot and not args.sweep:
        raise BenchmarkError('--plot draws a sweep: add --sweep num_frames=8,16,32,64 (or img_size=...).')
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise BenchmarkError('--plot needs matplotlib: pip install "logoformer-timm[bench]"') from e


def run(argv: Optional[Sequence[str]] = None, log: Callable[[str], None] = print,
        prog: str = 'logoformer-bench') -> List[Dict[str, Any]]:
    """The CLI without exit handling: parse, benchmark (and sweep), print, write; returns the result rows."""
    args = build_parser(prog).parse_args(argv)
    _check_args(args)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BenchConfig(
        num_frames=args.num_frames, img_size=args.img_size, batch_size=args.batch_size, device=args.device,
        precision=args.precision, channels_last=args.channels_last, torchcompile=args.torchcompile,
        num_warm_iter=args.num_warm_iter, num_bench_iter=args.num_bench_iter, threads=args.threads,
        isolate=device.type == 'cpu' if args.isolate is None else args.isolate,
        gemm_size=args.gemm_size or (2048 if device.type == 'cpu' else 8192))
    modes = BENCH_MODES if args.bench == 'both' else (args.bench,)
    specs = resolve_models(args.model, parse_model_kwargs(args.model_kwargs))
    sweeps = [parse_sweep(s) for s in args.sweep]
    grid = grid_configs(cfg, [parse_grid(g) for g in args.grid]) if args.grid else []
    if args.peers:
        peers, missing = peer_specs()
        specs += [p for p in peers if p.name not in {s.name for s in specs}]
        for message in missing:
            log(f'peer skipped: {message}')

    command = f'{prog} ' + ' '.join(sys.argv[1:] if argv is None else argv)
    gemm = gemm_peak(device, cfg.precision, cfg.gemm_size)
    load = _load_avg()
    env_line = (f'{environment(cfg)["device_name"]}, threads={torch.get_num_threads()}, {cfg.precision}; '
                f'torch {torch.__version__}, timm {timm.__version__}; dense matmul peak (sizes up to {cfg.gemm_size}) '
                f'{gemm:.1f} GFLOP/s at the start; counter: {COUNTER_NAME}')
    log(f'{env_line}; load average {load}')
    rows = []
    if sweeps and args.peers:
        log('note: sweeps compare LOGO-Former with its joint twin; the peers are not swept')
    gemm_by_precision = {cfg.precision: gemm}
    for label, point in grid:
        if point.precision not in gemm_by_precision:
            gemm_by_precision[point.precision] = gemm_peak(device, point.precision, cfg.gemm_size)
        log(f'grid point {label}:')
        point_rows = benchmark(specs, point, modes, detail=args.detail,
                               gemm_gflops=gemm_by_precision[point.precision], log=log)
        rows += [dict(r, grid=label) for r in point_rows]
    if grid:
        where = '; every model, mode and grid point in a fresh process' if cfg.isolate else ''
        log(f'\nGMACs/GFLOPs per clip; times median (p10, p90) over {cfg.num_bench_iter} steps after '
            f'{cfg.num_warm_iter} warm-up{where}')
    elif not sweeps:
        rows = benchmark(specs, cfg, modes, detail=args.detail, gemm_gflops=gemm, log=log)
    for param, points in sweeps:
        log(f'\nsweep {param}={",".join(map(str, points))} (LOGO-Former vs its block_types=joint twin):')
        sweep_rows = sweep(specs, param, points, cfg, modes, gemm_gflops=gemm, log=log)
        rows += sweep_rows
        log(format_sweep(sweep_table(sweep_rows)))
    # each precision's peak is re-measured at the end; a row's % peak is of the higher of its precision's two
    for precision, start in gemm_by_precision.items():
        end = gemm_peak(device, precision, cfg.gemm_size)
        set_peak_fractions([r for r in rows if r.get('precision', cfg.precision) == precision], max(start, end))
        log(f'matmul peak ({precision}) re-measured at the end: {end:.1f} GFLOP/s; % peak is of the higher, '
            f'{max(start, end):.1f} GFLOP/s')
        if precision == cfg.precision:
            env_line += f', {end:.1f} at the end'
    if not grid and not sweeps:
        log(f'\nclip {cfg.num_frames}x{cfg.img_size}x{cfg.img_size}, batch {cfg.batch_size}; GMACs/GFLOPs per clip; '
            f'times median (p10, p90) over {cfg.num_bench_iter} steps after {cfg.num_warm_iter} warm-up')
    if grid or not sweeps:
        log(format_table(rows))
        if args.detail:
            log('\nBy part (GMACs of one clip; time and peak memory of one inference pass):\n' + format_detail(rows))
    mem_methods = sorted({r['mem_method'] for r in rows if r.get('mem_method')})
    if mem_methods:
        log(f'memory: {"; ".join(mem_methods)}; load average now {_load_avg()}')
    if args.plot:
        plot_sweep(sweep_table(rows), args.plot, title=f'{command} | {env_line}')
        log(f'plot written to {args.plot}')
    notes = (f'{env_line}. Load average (1 min) {load} at the start, {_load_avg()} at the end; other jobs '
             f'shared this machine, so compare rows of one run rather than absolute times.')
    for path in args.results_file:
        fmt = args.results_format or os.path.splitext(path)[1].lstrip('.').lower()
        fmt = fmt if fmt in ('csv', 'json', 'md') else 'csv'
        write_results(rows, path, fmt, header=command, notes=notes)
        log(f'results written to {path} ({fmt})')
    return rows


def main(argv: Optional[Sequence[str]] = None, prog: str = 'logoformer-bench') -> int:
    """CLI entry point (``logoformer-bench``): user errors print one clear line to stderr and return 2."""
    try:
        run(argv, prog=prog)
    except BenchmarkError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
