"""float32 against bf16 (autocast, and weights cast) on the CPU, eager and compiled, side by side in one process:
``python benchmarks/bf16_cpu.py --help``.

Every model is timed in float32, under bf16 autocast (timm's ``--precision amp_bfloat16``: float32 weights) and
with its weights and input cast to bf16 (``--model-dtype bfloat16``), eagerly and compiled with inductor; the calls
alternate configuration by configuration, so machine load drifts into all of them alike. With ``--before`` (a
copy of the ``logoformer_timm`` package at another commit, as for ``kernel_ab.py``) that version's float32 model,
with the same weights, is timed in the same rotation. Each model's FLOPs are the benchmark's count
(:func:`~logoformer_timm.bench.counting.count_model`); the fraction of peak is of the same run's best square
matmul of that precision (float32 or bf16, measured before and after the models, the higher of the two). One
profiled eager pass per precision counts the Linear weights broadcast per row (``aten::copy_`` / ``aten::bmm`` of
``(N, out, in)`` tensors) and names the operators that take the most time.
"""
import argparse
import copy
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import timm
import torch

import logoformer_timm
from logoformer_timm.bench.counting import count_model
from logoformer_timm.bench.models import ModelSpec, protocol_clip
from logoformer_timm.bench.profiling import broadcast_linear_weights
from logoformer_timm.bench.runner import environment, load_avg
from logoformer_timm.bench.config import BenchConfig
from logoformer_timm.bench.timing import gemm_peak, percentile, set_peak_fractions

PRECISIONS = ('float32', 'amp_bfloat16', 'bfloat16')  # timm's names: float32, bf16 autocast, bf16 weights
MATRIX_FLAGS = ('avx512f', 'avx512_bf16', 'avx512_vnni', 'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8',
                'amx_fp16')


def cpu_description() -> str:
    """The CPU's model name, family/model and which matrix extensions its /proc/cpuinfo flags list."""
    info: Dict[str, str] = {}
    with open('/proc/cpuinfo') as f:
        for line in f:
            if ':' in line:
                key, value = (part.strip() for part in line.split(':', 1))
                info.setdefault(key, value)
            elif info:
                break  # the first processor's block
    flags = set(info.get('flags', '').split())
    has = [f for f in MATRIX_FLAGS if f in flags]
    lacks = [f for f in MATRIX_FLAGS if f not in flags]
    return (f'{environment(BenchConfig())["device_name"]}, family {info.get("cpu family")} model {info.get("model")}; '
            f'flags: {" ".join(has) or "none of the matrix extensions"}; absent: {" ".join(lacks) or "none"}')


def import_before(package_dir: Path, workdir: Path):
    """The other version's package, imported as ``kernel_ab.py`` does (its timm names given back to this one)."""
    spec = importlib.util.spec_from_file_location('kernel_ab', Path(__file__).with_name('kernel_ab.py'))
    kernel_ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel_ab)
    return kernel_ab.import_before(package_dir, workdir)


def build_before(before, name: str, **kwargs) -> torch.nn.Module:
    """``name`` built by the other version's own registration function."""
    for module_name in before.models.MODEL_MODULES:
        module = getattr(before.models, module_name)
        if hasattr(module, name):
            return getattr(module, name)(**kwargs)
    raise ValueError(f'{name} is not a model of the --before package')


def call(model: Callable, x: torch.Tensor, precision: str) -> Callable[[], torch.Tensor]:
    """A no-argument call of ``model`` on ``x`` in ``precision``, float32 logits out."""
    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16, enabled=precision == 'amp_bfloat16'):
            return model(x).float()
    return run


def top_ops(run: Callable[[], Any], k: int = 4) -> str:
    """The ``k`` operators with the most self CPU time in one profiled call, with their share of the call."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return ', '.join(f'{e.key} {100 * e.self_cpu_time_total / total:.0f}%' for e in events[:k])


def measure_model(name: str, args: argparse.Namespace, before, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Rows of one model: each precision eager and compiled (and the --before float32), timed in one rotation."""
    spec = ModelSpec(name=name)
    frames, size = protocol_clip(spec)
    count = count_model(spec, frames, size)
    torch.manual_seed(0)
    model = timm.create_model(name, num_frames=frames, img_size=size).eval()
    models = dict(float32=model, amp_bfloat16=model, bfloat16=copy.deepcopy(model).to(torch.bfloat16))
    x = torch.rand(1, 3, frames, size, size)
    inputs = dict(float32=x, amp_bfloat16=x, bfloat16=x.to(torch.bfloat16))
    configs: Dict[tuple, Callable[[], torch.Tensor]] = {}
    for precision in PRECISIONS:
        configs[(precision, 'eager')] = call(models[precision], inputs[precision], precision)
    if before is not None:
        old = build_before(before, name, num_frames=frames, img_size=size).eval()
        old.load_state_dict(model.state_dict())
        configs[('float32 before', 'eager')] = call(old, x, 'float32')
    reference = configs[('float32', 'eager')]()
    profiles = {p: (broadcast_linear_weights(models[p], configs[(p, 'eager')]), top_ops(configs[(p, 'eager')]))
                for p in PRECISIONS}
    if 'inductor' in args.mode:
        torch._dynamo.reset()  # the models share forward code objects: a fresh recompile budget for each model
        for precision in PRECISIONS:
            start = time.perf_counter()
            fn = call(torch.compile(models[precision]), inputs[precision], precision)
            fn()  # compiles
            configs[(precision, 'inductor')] = fn
            log(f'  {name} {precision}: compiled in {time.perf_counter() - start:.0f} s')
    diffs = {key: (fn() - reference).abs().max().item() for key, fn in configs.items()}
    times: Dict[tuple, List[float]] = {key: [] for key in configs}
    for _ in range(args.warm):
        for fn in configs.values():
            fn()
    for _ in range(args.iters):
        for key, fn in configs.items():
            start = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - start) * 1e3)
    rows = []
    for (precision, mode), ms in times.items():
        median = statistics.median(ms)
        fp32 = statistics.median(times[('float32', mode)])
        rows.append(dict(
            model=name, clip=f'{frames}x{size}x{size}', batch_size=1, precision=precision, mode=mode,
            infer_gmacs=round(count.infer.gmacs, 3), step_time=median, step_time_p10=percentile(ms, 10),
            step_time_p90=percentile(ms, 90), speedup_vs_float32=fp32 / median,
            infer_achieved_gflops_per_sec=2 * count.infer.gmacs / (median / 1e3),
            max_abs_logit_diff_vs_float32=diffs[(precision, mode)],
            broadcast_weight_ops=({f'{op} {list(shape)}': n for (op, shape), n in profiles[precision][0].items()}
                                  if mode == 'eager' and precision in profiles else None),
            top_ops=profiles[precision][1] if mode == 'eager' and precision in profiles else None,
        ))
        log(f'  {name} {precision} {mode}: {median:.1f} ms, {fp32 / median:.2f}x float32')
    return rows


def markdown(rows: List[Dict[str, Any]], header: List[str]) -> str:
    """The results as a Markdown table after the header lines."""
    lines = header + ['', '| model | clip | GMACs | precision | mode | ms median (p10-p90) | x float32 | % peak | '
                          'max abs logit diff vs float32 eager | Linear weights broadcast per row (eager profile) |',
                      '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        fraction = r.get('infer_peak_fraction')
        copies = r['broadcast_weight_ops']
        lines.append(
            f'| {r["model"]} | {r["clip"]} | {r["infer_gmacs"]:.2f} | {r["precision"]} | {r["mode"]} | '
            f'{r["step_time"]:.1f} ({r["step_time_p10"]:.1f}-{r["step_time_p90"]:.1f}) | '
            f'{r["speedup_vs_float32"]:.2f} | {"" if fraction is None else f"{100 * fraction:.1f}"} | '
            f'{r["max_abs_logit_diff_vs_float32"]:.1e} | '
            f'{"" if copies is None else (", ".join(f"{k} x{n}" for k, n in copies.items()) or "none")} |')
    notes = [f'{r["model"]} {r["precision"]} {r["mode"]}: {r["infer_warning"]}' for r in rows if r.get('infer_warning')]
    lines += [''] + notes if notes else []
    lines += ['', 'Operators with the most self CPU time in one eager pass (torch.profiler):', '',
              '| model | precision | operators |', '|---|---|---|']
    lines += [f'| {r["model"]} | {r["precision"]} | {r["top_ops"]} |' for r in rows if r['top_ops']]
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog='python benchmarks/bf16_cpu.py', description=__doc__.split('\n\n')[1])
    parser.add_argument('--model', nargs='+', default=['logoformer_tiny', 'logoformer_small', 'logoformer_base',
                                                       'former_dfer', 'mae_dfer'],
                        help='timm model names, each at its own protocol clip, batch 1')
    parser.add_argument('--mode', nargs='+', choices=['eager', 'inductor'], default=['eager', 'inductor'])
    parser.add_argument('--before', type=Path, default=None, help="another version's logoformer_timm folder")
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--warm', type=int, default=1, help='untimed rounds after the compiling call')
    parser.add_argument('--iters', type=int, default=5, help='timed rounds (every configuration once a round)')
    parser.add_argument('--gemm-size', type=int, default=2048)
    parser.add_argument('--results-file', nargs='*', default=[], metavar='FILE.md|FILE.json')
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args, 'python benchmarks/bf16_cpu.py ' + ' '.join(sys.argv[1:] if argv is None else argv))
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (a test) keeps its thread count
    return 0


def run(args: argparse.Namespace, command: str) -> None:
    """Measure, print and write the results for the parsed arguments."""
    cpu = torch.device('cpu')
    peaks = {p: [gemm_peak(cpu, p, args.gemm_size)] for p in ('float32', 'bfloat16')}
    load_start = load_avg()
    print(f'{cpu_description()}\nthreads {args.threads}; load average {load_start}; matmul peaks {peaks}', flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        before = import_before(args.before, Path(workdir)) if args.before else None
        rows = []
        for name in args.model:
            rows += measure_model(name, args, before, lambda line: print(line, flush=True))
    for p in peaks:
        peaks[p].append(gemm_peak(cpu, p, args.gemm_size))
    for p in peaks:  # float32 rows against the float32 peak, both bf16 precisions against the bf16 peak
        set_peak_fractions([r for r in rows if (r['precision'] == 'float32' or r['precision'] == 'float32 before')
                            == (p == 'float32')], max(peaks[p]))
    load_end = load_avg()
    header = [
        f'Command: `{command}`', '',
        f'CPU: {cpu_description()}.',
        f'torch {torch.__version__}, timm {timm.__version__}, {args.threads} thread(s), batch 1, random weights, '
        f'inference; times are medians of {args.iters} rounds after {args.warm} warm-up round(s), every '
        f'configuration of a model called once per round in turn, in one process. x float32 = the float32 time '
        f'of the same mode / the row\'s time (for "float32 before": below 1 means the current float32 is faster).',
        f'Dense matmul peak (square, sizes up to {args.gemm_size}), GFLOP/s at the start and the end: float32 '
        f'{peaks["float32"][0]:.1f} / {peaks["float32"][1]:.1f}, bf16 {peaks["bfloat16"][0]:.1f} / '
        f'{peaks["bfloat16"][1]:.1f}; % peak is of the higher of the row\'s precision (bf16 for both bf16 rows), '
        f'left empty where above 100 %.',
        f'Load average (1 min) {load_start} at the start, {load_end} at the end: other jobs shared these cores, '
        f'so compare rows of one model (timed in turn) rather than absolute times.',
    ]
    for path in args.results_file:
        text = (json.dumps(dict(command=command, cpu=cpu_description(), torch=torch.__version__,
                                threads=args.threads, load_avg=[load_start, load_end], gemm_peaks=peaks, rows=rows),
                           indent=1) + '\n') if path.endswith('.json') else markdown(rows, header)
        Path(path).write_text(text)
        print(f'written {path}')
    print(markdown(rows, header))


if __name__ == '__main__':
    sys.exit(main())
