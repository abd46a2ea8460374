"""Training and evaluation under ``torchrun``: the process group (:class:`DistInfo`, :func:`init_distributed`), sums
over ranks, and :class:`ShardSampler`, which gives every evaluation clip to exactly one rank."""
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..device import resolve_device

__all__ = ['DistInfo', 'init_distributed', 'all_reduce_sum', 'all_ranks_have_data', 'ShardSampler']


@dataclass
class DistInfo:
    """Process group facts: ``enabled`` under torchrun with more than one process."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: Optional[str] = None) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    rank, local_rank = int(os.environ.get('RANK', 0)), int(os.environ.get('LOCAL_RANK', 0))
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    dev = resolve_device(device)
    if dev.type == 'cuda' and dev.index is None:
        dev = torch.device('cuda', local_rank if world_size > 1 else 0)
    if dev.type == 'cuda':
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    return DistInfo(rank, world_size, local_rank, dev)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks (no-op in a single process)."""
    if info.enabled:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_ranks_have_data(n: int, info: DistInfo) -> bool:
    """True when every rank has clips in this batch (a batch of only bad clips is skipped by all ranks)."""
    if not info.enabled:
        return n > 0
    flag = torch.tensor([0 if n > 0 else 1], device=info.device)
    dist.all_reduce(flag)
    return flag.item() == 0


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``n`` takes indices ``r, r + n, ...``: every clip exactly once, no padding (evaluation)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
