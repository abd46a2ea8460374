"""The GPU benchmark in one run (``benchmarks/gpu.sh``), one module per job: ``plan`` (every entry of the matrix,
its estimate, and why those left out are left out), ``run`` (the matmul peak per precision and the copy bandwidth
before and after the models, then every planned entry within the time budget), ``report`` (the results folder:
``results.json``, ``results.md`` / ``.csv`` and ``summary.md``) and ``cli`` (the command).

``python -m logoformer_timm.bench.gpu plan`` prints the plan with its estimate; ``run --out DIR`` measures it on
CUDA; ``run --dry-run`` goes through the same code on CPU with fake timings, fake peaks and a mocked
``torch.cuda`` (device name and memory), so that the plan, the schema and the report are checked without a GPU;
``report --out DIR`` rewrites the report from ``results.json`` (after a run was cut short, or to add the tests).

An entry is one model, clip, batch, precision, compiler setting and mode. Every entry of the full matrix is in the
plan; those not measured say why (a rule of the plan, the time budget, predicted memory, a failure). A fraction of
the matmul peak above 100 % is never printed: :func:`~logoformer_timm.bench.timing.set_peak_fractions` leaves it
empty and the row's warning says why, and :func:`check_results` fails a report that shows one.
"""
from .plan import PEER_PATTERNS, Entry, build_plan, format_plan, peer_models
from .report import check_results, format_summary, write_report
from .run import DRY_RUN_ABOVE_PEAK, run_plan
from .cli import build_parser, main

__all__ = ['Entry', 'build_plan', 'format_plan', 'peer_models', 'run_plan', 'write_report', 'check_results',
           'format_summary', 'build_parser', 'main', 'PEER_PATTERNS', 'DRY_RUN_ABOVE_PEAK']
