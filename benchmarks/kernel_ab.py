"""A/B timing of two versions of the attention kernels in one process: ``python benchmarks/kernel_ab.py --help``.

The other version is a copy of ``logoformer_timm/layers/attention.py`` from another commit (it imports only torch
and timm), e.g. ``git show 7680fa1:logoformer_timm/layers/attention.py > /tmp/attention_before.py``. Both versions'
local and global attention get the same weights and inputs and are timed alternately, call by call (eager under
``torch.no_grad()``, and compiled with inductor), so machine load drifts into both alike; the ratio of medians is
printed as a Markdown table. Outputs are compared too.
"""
import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

from logoformer_timm.layers import attention as current


def load_module(path: Path, name: str = 'attention_other'):
    """Import a copy of attention.py from ``path`` under another module name."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build(module, kind: str, dim: int, heads: int):
    """``kind`` 'local' or 'global' attention of ``module`` (eval, no dropout)."""
    if kind == 'local':
        return module.WindowAttention3d(dim, heads, window_size=(2, 4, 4)).eval()
    return module.GlobalAttention3d(dim, heads, pool_size=(2, 4, 4)).eval()


def time_pair(fns, x: torch.Tensor, warm: int, iters: int):
    """Per-call seconds of each function, calls alternating A, B, A, B, ..."""
    times = [[] for _ in fns]
    with torch.no_grad():
        for _ in range(warm):
            for fn in fns:
                fn(x)
        for _ in range(iters):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn(x)
                times[i].append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python benchmarks/kernel_ab.py', description=__doc__.split('\n')[0])
    parser.add_argument('--before', type=Path, required=True, help='the other attention.py (the "before" kernels)')
    parser.add_argument('--grid', nargs='+', default=['16x7x7', '32x14x14'], help='token grids TxHxW')
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--warm', type=int, default=3)
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--compile', choices=['none', 'inductor', 'both'], default='both')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    before = load_module(args.before)
    modes = ['none', 'inductor'] if args.compile == 'both' else [args.compile]
    print(f'Command: `python benchmarks/kernel_ab.py {" ".join(argv if argv is not None else sys.argv[1:])}`\n')
    print(f'torch {torch.__version__}, threads={args.threads}, float32, batch 1, C={args.dim}, {args.heads} heads, '
          f'{args.iters} alternating calls each after {args.warm} warm-up calls; time per call, median (p10-p90).\n')
    print('| kernel | grid | mode | before ms | after (einops) ms | after / before | max abs diff |')
    print('|---|---|---|---|---|---|---|')
    for grid in args.grid:
        t, h, w = (int(v) for v in grid.split('x'))
        x = torch.randn(1, t, h, w, args.dim)
        for kind in ('local', 'global'):
            torch.manual_seed(0)
            old = build(before, kind, args.dim, args.heads)
            new = build(current, kind, args.dim, args.heads)
            new.load_state_dict(old.state_dict())
            for mode in modes:
                fns = (old, new) if mode == 'none' else tuple(torch.compile(m) for m in (old, new))
                with torch.no_grad():
                    diff = (fns[0](x) - fns[1](x)).abs().max().item()
                times = time_pair(fns, x, args.warm, args.iters)
                meds = [statistics.median(ts) * 1e3 for ts in times]
                spread = [statistics.quantiles(ts, n=10) for ts in times]
                cells = [f'{m:.2f} ({q[0] * 1e3:.2f}-{q[-1] * 1e3:.2f})' for m, q in zip(meds, spread)]
                print(f'| {kind} | {grid} | {mode} | {cells[0]} | {cells[1]} | {meds[1] / meds[0]:.3f} | {diff:.1e} |',
                      flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
