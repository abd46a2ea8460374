"""Devices, precisions and timing: warm-up, per-step times (device events off the CPU), the matmul peak and the
fraction of it a model reaches."""
import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch


__all__ = ['synchronize', 'warm_up', 'time_steps', 'percentile', 'gemm_peak', 'copy_bandwidth',
           'matmul_settings', 'set_peak_fractions']


def precision_dtypes(precision: str, device: torch.device) -> Tuple[torch.dtype, Optional[torch.dtype]]:
    """(parameter/input dtype, autocast dtype or None) for ``--precision``."""
    if precision == 'amp':
        return torch.float32, torch.float16 if device.type == 'cuda' else torch.bfloat16
    if precision.startswith('amp_'):
        return torch.float32, getattr(torch, precision[4:])
    return getattr(torch, precision), None


def autocast(device: torch.device, amp_dtype: Optional[torch.dtype]) -> torch.autocast:
    """Autocast to ``amp_dtype`` on ``device``; disabled when it is None."""
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CPU ops are synchronous)."""
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
        synchronize(device)
        times.append(time.perf_counter() - start)
        steady = len(times) >= 2 and abs(times[-1] - times[-2]) <= tolerance * min(times[-2:])
        if until_steady and steady and len(times) >= num_warm:
            return len(times), True
    return len(times), not until_steady


def time_steps(step: Callable[[], Any], num_warm: int, num_iter: int, device: torch.device) -> List[float]:
    """Run ``step`` ``num_warm`` times, then time ``num_iter`` steps one by one; times in ms."""
    for _ in range(num_warm):
        step()
    synchronize(device)
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
    synchronize(device)
    return [start.elapsed_time(end) for start, end in events]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def gemm_peak(device: torch.device, precision: str, size: int = 2048, iters: int = 5) -> float:
    """Best dense matmul throughput (GFLOP/s) in ``precision`` on ``device`` with the current thread count: square
    matrices of ``size`` / 4, / 2 and ``size``, ``iters`` timed repeats each (one size or one noisy run can
    come out below what a model's own kernels reach)."""
    dtype, amp_dtype = precision_dtypes(precision, device)
    best = 0.
    for n in sorted({max(1, size // 4), max(1, size // 2), size}):
        a = torch.randn(n, n, device=device, dtype=amp_dtype or dtype)
        b = torch.randn(n, n, device=device, dtype=amp_dtype or dtype)
        times = time_steps(lambda: torch.mm(a, b), 1, iters, device)
        best = max(best, 2 * n ** 3 / (max(min(times), 1e-6) / 1e3) / 1e9)
    return best


def copy_bandwidth(device: torch.device, nbytes: int = 2 ** 30, iters: int = 10) -> float:
    """Best device-to-device copy bandwidth (GB/s, 1e9 bytes, counting bytes read plus bytes written) of one
    ``nbytes`` buffer into another on ``device``, ``iters`` timed repeats after one warm-up."""
    src = torch.rand(max(1, nbytes // 4), device=device)
    dst = torch.empty_like(src)
    times = time_steps(lambda: dst.copy_(src), 1, iters, device)
    return 2 * src.numel() * 4 / (max(min(times), 1e-6) / 1e3) / 1e9


def matmul_settings() -> Dict[str, Any]:
    """What PyTorch does with float32 matmuls and convolutions (TF32 or not), as it stands now."""
    return dict(float32_matmul_precision=torch.get_float32_matmul_precision(),
                cuda_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                cuda_matmul_allow_bf16_reduced_precision=torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)


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
                # the ratio as 'x', never as a percentage above 100
                notes.append(f'{achieved:.1f} GFLOP/s is {fraction:.2f}x the measured matmul peak ({gemm_gflops:.1f} '
                             f'GFLOP/s): a measurement problem, not a result (machine load, or kernels such as '
                             f'oneDNN, compiled or TF32 convolutions that outrun the measured matmul)')
                fraction = None
            row[f'{prefix}_peak_fraction'] = fraction
            row[f'{prefix}_warning'] = '; '.join(notes)
