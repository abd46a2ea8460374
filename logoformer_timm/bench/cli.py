"""``logoformer-bench`` (and ``python benchmarks/flops.py``): timm benchmark.py's flags, for 5-D clips."""
import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

import timm
import torch

from .config import AMP_DTYPES, BENCH_MODES, MODEL_DTYPES, PRECISIONS, BenchConfig, BenchmarkError
from .counting import COUNTER_NAME
from .runner import benchmark, environment, load_avg
from .models import DFER_PEERS, PEER_NAMES, PEER_SETS, parse_model_kwargs, peer_specs, resolve_models
from .report import format_detail, format_sweep, format_table, plot_sweep, write_results
from .sweeps import PROTOCOL_CLIP, grid_configs, parse_grid, parse_sweep, sweep, sweep_table
from ..cli import ArgumentParser, check_output_file, run_cli
from ..device import resolve_device
from .timing import gemm_peak, set_peak_fractions

__all__ = ['build_parser', 'resolve_precision', 'run', 'main']

_DESCRIPTION = 'Video model benchmark: exact GMACs (attention included), step time, memory and efficiency, peers side by side.'


def build_parser(prog: str = 'logoformer-bench') -> argparse.ArgumentParser:
    """timm benchmark.py's flags, for 5-D clips."""
    parser = ArgumentParser(prog=prog, description=_DESCRIPTION)
    parser.add_argument('--model', '-m', nargs='+', default=['logoformer_*'],
                        help='timm model names or wildcards, or peer names (torchvision/r3d_18, ...)')
    parser.add_argument('--model-kwargs', nargs='*', default=[], metavar='K=V',
                        help='model kwargs, e.g. block_types=joint local_window=2,4,4 (default: none)')
    parser.add_argument('--peers', nargs='?', const='all', default=None, choices=PEER_SETS,
                        help=f'add peers, random weights: dfer (the DFER zoo, {", ".join(DFER_PEERS)}: each model at '
                             f'its own protocol clip and at the common --num-frames x --img-size, unless --grid '
                             f'clip= says otherwise), video (installed {", ".join(PEER_NAMES)}), all (what --peers '
                             f'alone adds) (default: no peers)')
    parser.add_argument('--bench', choices=('inference', 'train', 'both'), default='inference',
                        help='what a step is: a forward pass without gradients, a training step (forward, backward, '
                             'SGD update), or both, each in its own columns')
    parser.add_argument('--detail', action='store_true',
                        help='per part (stem, attention, MLP, head): GMACs, and time and peak memory of an inference '
                             'pass (torch.profiler memory events on CPU, allocator statistics on CUDA)')
    parser.add_argument('--num-frames', type=int, default=16, help='frames per clip')
    parser.add_argument('--img-size', type=int, default=112, help='height and width of every frame, in pixels')
    parser.add_argument('-b', '--batch-size', type=int, default=1, help='clips per step')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--precision', choices=PRECISIONS, default='float32',
                        help='float32, bfloat16 or float16 = weights and input in that dtype; amp = autocast '
                             '(float16 on cuda, bfloat16 on cpu), amp_bfloat16 / amp_float16 = autocast to that dtype')
    parser.add_argument('--amp', action='store_true', help='autocast, as timm benchmark.py: --precision amp')
    parser.add_argument('--amp-dtype', choices=AMP_DTYPES, default=None,
                        help='autocast to this dtype (float32 weights), as timm benchmark.py: --precision amp_<dtype> '
                             '(default: no autocast; with --amp, float16 on CUDA and bfloat16 on CPU)')
    parser.add_argument('--model-dtype', choices=MODEL_DTYPES, default=None,
                        help='weights and input cast to this dtype, no autocast, as timm benchmark.py: '
                             '--precision <dtype> (default: the weights stay float32)')
    parser.add_argument('--channels-last', action='store_true', help='channels_last_3d input and weights')
    parser.add_argument('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND',
                        help='torch.compile the model with this backend (inductor when none is named) (default: '
                             'eager)')
    parser.add_argument('--num-warm-iter', type=int, default=2, help='untimed steps before the timed ones')
    parser.add_argument('--num-bench-iter', type=int, default=10,
                        help='timed steps; the step time is their median')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch.set_num_threads for the models and the matmul peak (default: torch's own count)")
    parser.add_argument('--isolate', action=argparse.BooleanOptionalAction, default=None,
                        help='time each model and mode in a fresh process (default: on for cpu, where it makes '
                             'the peak-RSS column per model)')
    parser.add_argument('--gemm-size', type=int, default=None,
                        help='largest matrix size of the peak matmul, also run at 1/2 and 1/4 (default: 2048 on cpu, '
                             '8192 otherwise)')
    parser.add_argument('--sweep', action='append', default=[], metavar='PARAM=V1,V2',
                        help='num_frames=8,16,32,64 or img_size=112,160,224: LOGO-Former vs its joint twin '
                             '(default: no sweep)')
    parser.add_argument('--grid', action='append', default=[], metavar='PARAM=V1,V2',
                        help='measure every model at every combination, side by side: clip=16x112,32x224 '
                             'batch_size=1,8 precision=float32,amp_bfloat16 torchcompile=none,inductor '
                             '(default: no grid)')
    parser.add_argument('--plot', default=None, metavar='FILE.png',
                        help='plot the sweep (needs matplotlib) (default: no plot)')
    parser.add_argument('--results-file', nargs='+', default=[], metavar='FILE',
                        help='one or more files; the format comes from each extension (.csv, .json, .md) '
                             '(default: none, the table is printed only)')
    parser.add_argument('--results-format', choices=('csv', 'json', 'md'), default=None,
                        help='format for every results file (default: from its extension, else csv)')
    return parser


def resolve_precision(args: argparse.Namespace) -> str:
    """One ``--precision`` value from ``--precision``, ``--amp`` / ``--amp-dtype`` and ``--model-dtype`` (timm's
    benchmark.py flags); asking for two different precisions is a user error."""
    asked = []
    if args.amp or args.amp_dtype:
        asked.append(f'amp_{args.amp_dtype}' if args.amp_dtype else 'amp')
    if args.model_dtype:
        asked.append(args.model_dtype)
    if len(asked) > 1:
        raise BenchmarkError(
            f'--amp/--amp-dtype (autocast, float32 weights) and --model-dtype (weights cast, no autocast) are two '
            f'precisions: give one of them, got {asked[0]} and {asked[1]}.')
    if asked and args.precision not in ('float32', asked[0]):
        raise BenchmarkError(f'--precision {args.precision} and {asked[0]} (from --amp/--amp-dtype/--model-dtype) '
                             f'disagree: give one of them.')
    return asked[0] if asked else args.precision


def _check_args(args: argparse.Namespace) -> None:
    for name in ('num_frames', 'img_size', 'batch_size', 'num_bench_iter'):
        if getattr(args, name) < 1:
            raise BenchmarkError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}.')
    if args.num_warm_iter < 0:
        raise BenchmarkError(f'--num-warm-iter must be >= 0, got {args.num_warm_iter}.')
    if args.threads is not None and args.threads < 1:
        raise BenchmarkError(f'--threads must be >= 1, got {args.threads}.')
    for flag, paths in (('--results-file', args.results_file), ('--plot', filter(None, [args.plot]))):
        for path in paths:  # before the run, not after it
            check_output_file(path, flag, overwrite=True)
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
    args.precision = resolve_precision(args)
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
    grids = [parse_grid(g) for g in args.grid]
    if args.peers:
        peers, missing = peer_specs(args.peers)
        specs += [p for p in peers if p.name not in {s.name for s in specs}]
        for message in missing:
            log(f'peer skipped: {message}')
        if args.peers in ('all', 'dfer') and not sweeps and all(key != 'clip' for key, _ in grids):
            # the DFER comparison: each model at its own protocol clip, and all at one common clip
            grids.insert(0, ('clip', [PROTOCOL_CLIP, (args.num_frames, args.img_size)]))
    grid = grid_configs(cfg, grids) if grids else []

    command = f'{prog} ' + ' '.join(sys.argv[1:] if argv is None else argv)
    gemm = gemm_peak(device, cfg.precision, cfg.gemm_size)
    load = load_avg()
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
        log(f'memory: {"; ".join(mem_methods)}; load average now {load_avg()}')
    if args.plot:
        plot_sweep(sweep_table(rows), args.plot, title=f'{command} | {env_line}')
        log(f'plot written to {args.plot}')
    notes = (f'{env_line}. Load average (1 min) {load} at the start, {load_avg()} at the end; other jobs '
             f'shared this machine, so compare rows of one run rather than absolute times.')
    for path in args.results_file:
        fmt = args.results_format or os.path.splitext(path)[1].lstrip('.').lower()
        fmt = fmt if fmt in ('csv', 'json', 'md') else 'csv'
        write_results(rows, path, fmt, header=command, notes=notes)
        log(f'results written to {path} ({fmt})')
    return rows


def main(argv: Optional[Sequence[str]] = None, prog: str = 'logoformer-bench') -> int:
    """CLI entry point (``logoformer-bench``): user errors print one clear line to stderr and return 2."""
    def body() -> None:
        run(argv, prog=prog)
    return run_cli(body)

