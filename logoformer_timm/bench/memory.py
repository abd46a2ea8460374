"""Peak memory a model and its steps add: the CUDA allocator's statistics, or the process's peak RSS on CPU."""
import gc
from typing import Optional

import torch

__all__ = ['MemoryMeter', 'is_oom']


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


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (CUDA's, or a CPU allocation failure)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ('out of memory' in text or "can't allocate memory" in text)
