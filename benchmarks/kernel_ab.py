"""A/B timing of two versions of the package's attention kernels and model in one process:
``python benchmarks/kernel_ab.py --help``.

``--before`` is a copy of the ``logoformer_timm`` package at another commit, e.g. after
``git archive 7680fa1 logoformer_timm | tar -x -C /tmp/before``: ``--before /tmp/before/logoformer_timm``. It is
imported under another name (``logoformer_before``), next to this checkout's package. Both versions' local and
global attention (``--what kernels``) and whole ``LogoFormer`` models (``--what model``) get the same weights and
inputs and are timed alternately, call by call (eager under ``torch.inference_mode()``, and compiled with
inductor), so machine load drifts into both alike. Outputs are compared; the table (Markdown) gives the medians,
p10-p90 and the ratio of medians.
"""
import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import timm
import torch

import logoformer_timm
import logoformer_timm.models.logoformer


def import_before(package_dir: Path, workdir: Path):
    """Import the package copy at ``package_dir`` as ``logoformer_before`` (its imports are relative)."""
    shutil.copytree(package_dir, workdir / 'logoformer_before', ignore=shutil.ignore_patterns('__pycache__'))
    sys.path.insert(0, str(workdir))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # it registers the same timm model names again ...
        before = importlib.import_module('logoformer_before')
        logoformer_timm.models.logoformer.refresh_pretrained_cfgs()  # ... so give them back to this package
        for name in logoformer_timm.models.MODEL_MODULES:  # the zoo's too
            module = sys.modules[f'logoformer_timm.models.{name}']
            for model_name in timm.list_models(module=name):
                timm.models.register_model(getattr(module, model_name))
    return before


def time_alternating(fns: Sequence[Callable[[], torch.Tensor]], warm: int, iters: int) -> List[List[float]]:
    """Seconds per call of each function, the calls alternating A, B, A, B, ..."""
    times = [[] for _ in fns]
    with torch.inference_mode():
        for _ in range(warm):
            for fn in fns:
                fn()
        for _ in range(iters):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - start)
    return times


def row(label: str, mode: str, pair: Tuple[torch.nn.Module, torch.nn.Module], x: torch.Tensor, warm: int,
        iters: int) -> str:
    """One table row: ``pair`` (before, after) timed on ``x``, compiled with inductor when ``mode`` says so."""
    fns = pair if mode == 'eager' else tuple(torch.compile(m) for m in pair)
    with torch.inference_mode():
        diff = (fns[0](x) - fns[1](x)).abs().max().item()
    times = time_alternating([lambda f=f: f(x) for f in fns], warm, iters)
    medians = [statistics.median(t) * 1e3 for t in times]
    cells = []
    for m, t in zip(medians, times):
        q = statistics.quantiles(t, n=10) if len(t) > 1 else [t[0], t[0]]
        cells.append(f'{m:.1f} ({q[0] * 1e3:.1f}-{q[-1] * 1e3:.1f})')
    return f'| {label} | {mode} | {cells[0]} | {cells[1]} | {medians[1] / medians[0]:.3f} | {diff:.1e} |'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python benchmarks/kernel_ab.py', description=__doc__.split('\n\n')[1])
    parser.add_argument('--before', type=Path, required=True, help='the other version\'s logoformer_timm folder')
    parser.add_argument('--what', nargs='+', choices=['kernels', 'model'], default=['kernels', 'model'])
    parser.add_argument('--grid', nargs='+', default=['16x7x7', '32x14x14'], help='kernel token grids TxHxW')
    parser.add_argument('--clip', nargs='+', default=['16x112', '32x224'], help='model clips FRAMESxSIZE')
    parser.add_argument('--dim', type=int, default=512, help='embed_dim (logoformer_base: 512)')
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument('--mode', nargs='+', choices=['eager', 'inductor'], default=['eager', 'inductor'])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--warm', type=int, default=3)
    parser.add_argument('--iters', type=int, default=20, help='timed calls of each version (kernels)')
    parser.add_argument('--model-iters', type=int, default=10, help='timed calls of each version (model)')
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _run(args, argv)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (a test) keeps its thread count
    return 0


def _run(args: argparse.Namespace, argv) -> None:
    """Print the table for the parsed arguments."""
    with tempfile.TemporaryDirectory() as workdir:
        before = import_before(args.before, Path(workdir))
        print(f'Command: `python benchmarks/kernel_ab.py {" ".join(argv if argv is not None else sys.argv[1:])}`\n')
        print(f'torch {torch.__version__}, threads={args.threads}, float32, batch 1, C={args.dim}, {args.heads} heads; '
              f'calls alternate between the versions; ms per call, median (p10-p90).\n')
        print('| what | mode | before ms | after ms | after / before | max abs diff |')
        print('|---|---|---|---|---|---|')
        versions = (before, logoformer_timm)
        if 'kernels' in args.what:
            for grid in args.grid:
                x = torch.randn(1, *(int(v) for v in grid.split('x')), args.dim)
                for kind in ('local', 'global'):
                    torch.manual_seed(0)
                    pair = tuple(
                        (v.layers.WindowAttention3d(args.dim, args.heads, window_size=(2, 4, 4)) if kind == 'local'
                         else v.layers.GlobalAttention3d(args.dim, args.heads, pool_size=(2, 4, 4))).eval()
                        for v in versions)
                    pair[1].load_state_dict(pair[0].state_dict())
                    for mode in args.mode:
                        print(row(f'{kind} attention, grid {grid}', mode, pair, x, args.warm, args.iters), flush=True)
        if 'model' in args.what:
            for clip in args.clip:
                frames, size = (int(v) for v in clip.split('x'))
                kwargs = dict(embed_dim=args.dim, depth=args.depth, num_heads=args.heads, num_frames=frames,
                              img_size=size)
                torch.manual_seed(0)
                pair = tuple(v.LogoFormer(**kwargs).eval() for v in versions)
                pair[1].load_state_dict(pair[0].state_dict())
                x = torch.rand(1, 3, frames, size, size)
                for mode in args.mode:
                    print(row(f'LogoFormer, clip {clip}', mode, pair, x, 1, args.model_iters), flush=True)


if __name__ == '__main__':
    sys.exit(main())
