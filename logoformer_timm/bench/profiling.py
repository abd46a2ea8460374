"""Time and peak memory per part of a model's forward pass (stem, attention, MLP, head, ...).

Parts are module-path regexes (as in :data:`~logoformer_timm.bench.counting.LOGOFORMER_PARTS`); forward hooks on the
outermost matching modules mark where each part starts and ends.

* Time: the hooks time every call of a part over ``num_iter`` forward passes (``perf_counter`` on CPU, device
  events read after a synchronize elsewhere); a part's time is its calls' total per pass, averaged over the passes,
  and the whole pass is timed in the same passes, so the parts never add up to more than the pass.
* Peak memory of a part: the most memory it allocated above what was live when it started (the largest of its
  calls). On CUDA the hooks reset and read the allocator's peak statistics (``max_memory_allocated``); on CPU,
  which has no allocator statistics, one extra pass runs under ``torch.profiler`` with ``profile_memory=True`` and
  every allocation and free is attributed to the ``record_function`` range the hooks open around each call. The
  profiler also names the operator that was running when the part reached its peak.

The passes run inside :func:`~logoformer_timm.layers.hooks_see_chunks`, so the hooks do not turn chunked inference
off: the parts are timed in the pass users run, a chunked part once per chunk (its calls summed).
"""
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..layers import hooks_see_chunks
from .timing import synchronize

__all__ = [
    'PartProfile', 'PartsProfile', 'profile_parts', 'part_modules', 'sdpa_backend_of', 'sdpa_backends',
    'broadcast_linear_weights']

_RANGE_PREFIX = 'part:'
_STEP_RANGE = 'part-profile:step'


@dataclass
class PartProfile:
    """One part: time per forward pass (ms), peak memory above its start (MB, 1e6 bytes), and where it peaked."""
    name: str
    calls: int
    time_ms: float
    peak_mem_mb: float
    peak_op: str = ''


@dataclass
class PartsProfile:
    """Per-part times and peaks of one forward pass, the whole pass's, and how they were measured."""
    parts: List[PartProfile]
    step_ms: float
    step_peak_mem_mb: float
    time_method: str
    mem_method: str
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def other_ms(self) -> float:
        """Time of the pass outside every part (position embedding, norms, residual adds, pooling)."""
        return self.step_ms - sum(p.time_ms for p in self.parts)


def part_modules(model: nn.Module, parts: Optional[Sequence[Tuple[str, str]]] = None
                 ) -> List[Tuple[str, str, nn.Module]]:
    """``(part, module path, module)`` for the outermost modules whose path matches a part's regex.

    ``parts=None``: the model's top-level children, looking through single-child wrappers.
    """
    named = list(model.named_modules())
    if parts is None:
        prefix, module = '', model
        while len(list(module.children())) == 1:
            name, module = next(iter(module.named_children()))
            prefix += name + '.'
        parts = [(name, re.escape(prefix + name)) for name, _ in module.named_children()]
    found, taken = [], []
    for path, module in named:
        if not path or any(path.startswith(t + '.') for t in taken):
            continue
        for part, pattern in parts:
            if re.fullmatch(pattern, path):
                found.append((part, path, module))
                taken.append(path)
                break
    return found


def _hook(modules: Sequence[Tuple[str, str, nn.Module]], on_start: Callable[[str, str], None],
          on_end: Callable[[str, str], None]) -> List[Any]:
    handles = []
    for part, path, module in modules:
        handles.append(module.register_forward_pre_hook(lambda m, a, part=part, path=path: on_start(part, path)))
        handles.append(module.register_forward_hook(lambda m, a, o, part=part, path=path: on_end(part, path)))
    return handles


def _time_parts(run: Callable[[], Any], modules, device: torch.device, num_iter: int
                ) -> Tuple[Dict[str, float], Dict[str, int], float]:
    """Mean ms per pass of every part and of the whole pass, timed in the same passes; calls per pass."""
    names = list(dict.fromkeys(part for part, _, _ in modules))
    totals, calls, step_total = {n: 0. for n in names}, {n: 0 for n in names}, 0.
    cpu = device.type == 'cpu'
    for _ in range(num_iter):
        marks: List[Tuple[str, Any, Any]] = []
        open_marks: Dict[str, Any] = {}

        def now():
            if cpu:
                return time.perf_counter()
            event = torch.Event(device=device, enable_timing=True)
            event.record()
            return event

        def start(part, path):
            open_marks[path] = now()

        def end(part, path):
            marks.append((part, open_marks.pop(path), now()))

        handles = _hook(modules, start, end)
        try:
            begin = now()
            run()
            finish = now()
        finally:
            for h in handles:
                h.remove()
        synchronize(device)
        elapsed = (lambda a, b: (b - a) * 1e3) if cpu else (lambda a, b: a.elapsed_time(b))
        step_total += elapsed(begin, finish)
        for part, a, b in marks:
            totals[part] += elapsed(a, b)
            calls[part] += 1
    return ({n: totals[n] / num_iter for n in names}, {n: calls[n] // num_iter for n in names},
            step_total / num_iter)


def _cuda_peaks(run: Callable[[], Any], modules, device: torch.device) -> Tuple[Dict[str, float], float]:
    """Per-part and whole-pass peak bytes above their start, from the CUDA allocator's statistics."""
    peaks = {part: 0 for part, _, _ in modules}
    starts: Dict[str, int] = {}
    overall = dict(peak=0)

    def start(part, path):
        overall['peak'] = max(overall['peak'], torch.cuda.max_memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
        starts[path] = torch.cuda.memory_allocated(device)

    def end(part, path):
        peaks[part] = max(peaks[part], torch.cuda.max_memory_allocated(device) - starts.pop(path))

    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    handles = _hook(modules, start, end)
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    synchronize(device)
    overall['peak'] = max(overall['peak'], torch.cuda.max_memory_allocated(device))
    return peaks, overall['peak'] - base


def _op_chain(ops: Sequence[Tuple[int, int, str]], ts: int, start: int, end: int) -> str:
    """The operators (outermost first, allocation-only ops left out) running at time ``ts`` inside a range."""
    chain = [(a, -b, name) for a, b, name in ops if start <= a <= ts <= b and not name.startswith('aten::empty')]
    return ' > '.join(name for _, _, name in sorted(chain)[:3])


def _profiler_peaks(run: Callable[[], Any], modules, device: torch.device
                    ) -> Tuple[Dict[str, float], Dict[str, str], float, Any]:
    """Per-part and whole-pass peak bytes above their start, from ``torch.profiler``'s memory events (CPU)."""
    from torch.profiler import ProfilerActivity, profile, record_function
    open_ranges: Dict[str, Any] = {}

    def start(part, path):
        open_ranges[path] = record_function(_RANGE_PREFIX + part)
        open_ranges[path].__enter__()

    def end(part, path):
        open_ranges.pop(path).__exit__(None, None, None)

    handles = _hook(modules, start, end)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            with record_function(_STEP_RANGE):
                run()
    finally:
        for h in handles:
            h.remove()
    events = prof.profiler.kineto_results.events()
    memory = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU)
    ranges = [(e.name(), e.start_ns(), e.end_ns()) for e in events if e.name().startswith(_RANGE_PREFIX)
              or e.name() == _STEP_RANGE]
    ops = [(e.start_ns(), e.end_ns(), e.name()) for e in events if e.name().startswith('aten::')]
    peaks = {part: 0 for part, _, _ in modules}
    peak_ops = {part: '' for part, _, _ in modules}
    step_peak = 0
    for name, start_ns, end_ns in ranges:
        live, peak, peak_ts = 0, 0, None
        for ts, nbytes in memory:
            if ts < start_ns:
                continue
            if ts > end_ns:
                break
            live += nbytes
            if live > peak:
                peak, peak_ts = live, ts
        if name == _STEP_RANGE:
            step_peak = max(step_peak, peak)
            continue
        part = name[len(_RANGE_PREFIX):]
        if peak >= peaks[part]:
            peaks[part] = peak
            peak_ops[part] = '' if peak_ts is None else _op_chain(ops, peak_ts, start_ns, end_ns)
    return peaks, peak_ops, step_peak, prof


def profile_parts(
        model: nn.Module,
        run: Callable[[], Any],
        parts: Optional[Sequence[Tuple[str, str]]] = None,
        device: Any = 'cpu',
        num_warm: int = 1,
        num_iter: int = 3,
) -> PartsProfile:
    """Time and peak memory per part of ``run()`` (a forward pass of ``model``), see the module docstring.

    ``run`` is called ``num_warm`` times, then ``num_iter`` timed times, then once more for memory.
    The profiler of the CPU memory pass is kept in ``extra['profiler']`` for further analysis.
    """
    device = torch.device(device)
    modules = part_modules(model, parts)
    if not modules:
        raise ValueError('no module of the model matches any part')
    for _ in range(num_warm):
        run()
    synchronize(device)
    extra: Dict[str, Any] = {}
    with hooks_see_chunks():  # the part hooks keep chunked inference on: the pass as users run it
        times, calls, step_ms = _time_parts(run, modules, device, num_iter)
        if device.type == 'cuda':
            peaks, step_peak = _cuda_peaks(run, modules, device)
        else:
            peaks, peak_ops, step_peak, extra['profiler'] = _profiler_peaks(run, modules, device)
    if device.type == 'cuda':
        peak_ops = {}
        mem_method = ('cuda allocator: max_memory_allocated after reset_peak_memory_stats at each part\'s start, '
                      'minus memory_allocated then')
    else:
        mem_method = ('torch.profiler(profile_memory=True) allocation/free events inside record_function ranges '
                      'around each part\'s calls (tensor memory, not RSS)')
    if device.type == 'cpu':
        time_method = f'forward hooks, time.perf_counter, mean of {num_iter} passes'
    else:
        time_method = f'forward hooks, device events read after a synchronize, mean of {num_iter} passes'
    profiles = [PartProfile(name, calls[name], times[name], peaks[name] / 1e6, peak_ops.get(name, ''))
                for name in times]
    return PartsProfile(profiles, step_ms, step_peak / 1e6, time_method, mem_method, extra)


# substrings of the kernel names each SDPA backend launches on CUDA (lower case), in the order they are tried
_SDPA_KERNELS = (
    ('cudnn', ('cudnn', 'sdpa_fprop', 'sdpa_bprop')),
    ('flash', ('flash',)),
    ('efficient', ('fmha', 'efficient_attention', 'mem_efficient')),
)


def sdpa_backend_of(kernel: str) -> Optional[str]:
    """The SDPA backend (``cudnn``, ``flash``, ``efficient``) a CUDA kernel name belongs to, or None."""
    name = kernel.lower()
    if 'attention' not in name and 'fmha' not in name and 'flash' not in name and 'sdpa' not in name:
        return None
    return next((backend for backend, keys in _SDPA_KERNELS if any(k in name for k in keys)), None)


def sdpa_backends(run: Callable[[], Any], device: torch.device) -> Dict[str, int]:
    """Kernel launches per SDPA backend while ``run()`` executes on a CUDA ``device`` (torch.profiler); ``math``
    counts the ``aten::_scaled_dot_product_attention_math`` calls (the unfused fallback, bmm + softmax)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        synchronize(device)
    counts: Dict[str, int] = {}
    for event in prof.events():
        backend = 'math' if event.name == 'aten::_scaled_dot_product_attention_math' else (
            sdpa_backend_of(event.name) if event.device_type == torch.autograd.DeviceType.CUDA else None)
        if backend:
            counts[backend] = counts.get(backend, 0) + 1
    return counts


def broadcast_linear_weights(model: nn.Module, run: Callable[[], Any]) -> Dict[Tuple[str, Tuple[int, ...]], int]:
    """Calls per ``(operator, shape)`` of ``aten::copy_`` and ``aten::bmm`` on ``(N, a, b)`` tensors, ``N > 1``,
    whose ``(a, b)`` is a Linear weight of ``model`` or its transpose, while ``run()`` executes (torch.profiler
    with ``record_shapes``): a Linear whose input matmul cannot fold into one 2-D multiply (a strided view) has
    its weight broadcast to one copy per leading row and multiplied batch by batch. Empty when none is."""
    from torch.profiler import ProfilerActivity, profile
    weights = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)}
    weights |= {w[::-1] for w in weights}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run()
    found: Dict[Tuple[str, Tuple[int, ...]], int] = {}
    for event in prof.events():
        if event.name not in ('aten::copy_', 'aten::bmm'):
            continue
        for shape in event.input_shapes or ():
            if len(shape) == 3 and shape[0] > 1 and tuple(shape[1:]) in weights:
                key = (event.name, tuple(shape))
                found[key] = found.get(key, 0) + 1
                break
    return found
