"""Video model benchmark: exact GMACs (attention included), step time, memory and efficiency, peers side by side.

timm's ``benchmark.py`` flags and column names, adapted to clips ``(B, C, T, H, W)`` (an extra ``frames``
column, ``channels_last_3d``). Run it as ``logoformer-bench`` (installed) or ``python benchmarks/flops.py`` from a
clone (see ``--help``).

What the numbers are:

* ``infer_gmacs`` / ``infer_gflops``: one clip's forward pass, counted by :data:`~logoformer_timm.bench.counting.COUNTER_NAME`
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

The package, one job a module: ``config`` (settings), ``models`` (what to run: names, labels, peers),
``counting`` (FLOPs), ``timing`` (devices, precisions, step times, matmul peak), ``memory`` and ``profiling``
(peak memory; time and memory per part), ``runner`` (one model, in a fresh process), ``sweeps`` (``--sweep`` and
``--grid``), ``report`` (columns, files, tables, plot), ``cli`` (``logoformer-bench``), ``summary``
(``python -m logoformer_timm.bench.summary``), ``gpu`` (the plan, ceilings and report of ``benchmarks/gpu.sh``,
``python -m logoformer_timm.bench.gpu``; not imported here).
"""
from .config import (
    AMP_DTYPES, BENCH_MODES, GRID_PARAMS, MODEL_DTYPES, NUM_CLASSES, PRECISIONS, SWEEP_PARAMS, BenchConfig,
    BenchmarkError)
from .counting import COUNTER_NAME, LOGOFORMER_PARTS, FlopCount, ModelCount, count_flops, count_model, flops_by_part
from .runner import benchmark, environment, measure, measure_parts, measure_with_retry
from .models import PEER_NAMES, ModelSpec, build_model, joint_twin, parse_model_kwargs, peer_specs, resolve_models
from .report import COLUMNS, COLUMN_DOCS, DETAIL_COLUMN_DOCS, format_detail, format_sweep, format_table, plot_sweep
from .report import write_results
from .sweeps import grid_configs, parse_grid, parse_sweep, sweep, sweep_table
from .timing import gemm_peak, percentile, set_peak_fractions, time_steps, warm_up
from .cli import build_parser, main, resolve_precision, run

__all__ = [
    'AMP_DTYPES', 'BENCH_MODES', 'GRID_PARAMS', 'MODEL_DTYPES', 'NUM_CLASSES', 'PRECISIONS', 'SWEEP_PARAMS',
    'BenchConfig', 'BenchmarkError',
    'COUNTER_NAME', 'LOGOFORMER_PARTS', 'FlopCount', 'ModelCount', 'count_flops', 'count_model', 'flops_by_part',
    'benchmark', 'environment', 'measure', 'measure_parts', 'measure_with_retry', 'PEER_NAMES', 'ModelSpec',
    'build_model', 'joint_twin', 'parse_model_kwargs', 'peer_specs', 'resolve_models', 'COLUMNS', 'COLUMN_DOCS',
    'DETAIL_COLUMN_DOCS', 'format_detail', 'format_sweep', 'format_table', 'plot_sweep', 'write_results',
    'grid_configs', 'parse_grid', 'parse_sweep', 'sweep', 'sweep_table', 'gemm_peak', 'percentile',
    'set_peak_fractions', 'time_steps', 'warm_up', 'build_parser', 'main', 'resolve_precision', 'run'
]
