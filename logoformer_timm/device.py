"""The torch device a ``--device`` flag names, checked against this machine (used by every command that runs a
model: the loader, the trainer's ranks, the benchmark)."""
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:  # only for annotations: torch is imported when a device is resolved
    import torch

__all__ = ['resolve_device']


def resolve_device(name: str) -> 'torch.device':
    """The torch device for ``--device``; a one-line error when this machine does not have it."""
    import torch
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f'--device {name!r} is not a torch device: {e}') from None
    if device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise UsageError(
                f'--device {name} was requested but no CUDA GPU is available to torch {torch.__version__} '
                f'(torch.cuda.is_available() is False); use --device cpu.')
        if device.index is not None and device.index >= count:
            raise UsageError(f'--device {name}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1}).')
    elif device.type != 'cpu':
        module = getattr(torch, device.type, None)
        if module is None or not module.is_available():
            raise UsageError(f'--device {name} is not available here; use --device cpu.')
    return device
