"""The GPU benchmark's command (``python -m logoformer_timm.bench.gpu {plan,run,report}``, run by benchmarks/gpu.sh)."""
import argparse
import json
import os
import sys
from typing import Optional, Sequence

from ...cli import ArgumentParser, positive_float, run_cli
from .plan import DEFAULT_BUDGET_S, build_plan, format_plan
from .report import check_results, write_report
from .run import run_plan

__all__ = ['build_parser', 'main']


def build_parser() -> argparse.ArgumentParser:
    """``python -m logoformer_timm.bench.gpu {plan,run,report}``."""
    parser = ArgumentParser(prog='python -m logoformer_timm.bench.gpu', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='action', required=True)
    for name, text in (('plan', 'print the plan and its estimate'), ('run', 'measure the plan, write --out'),
                       ('report', 'rewrite the report of --out from its results.json')):
        p = sub.add_parser(name, help=text)
        if name != 'report':
            p.add_argument('--budget-s', type=positive_float, default=DEFAULT_BUDGET_S,
                           help='seconds for the entries (the plan stops adding entries there, the run skips those '
                                'that no longer fit)')
            p.add_argument('--model', nargs='+', default=None, help='only these models (default: the full plan)')
        if name != 'plan':
            p.add_argument('--out', required=True, help='results folder')
        if name == 'run':
            p.add_argument('--dry-run', action='store_true', help='on CPU, fake timings: check plan, schema, report')
            p.add_argument('--device', default='cuda', help='cuda or cuda:N')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; user errors print one line and return 2; a report with problems returns 1."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.action == 'plan':
            entries, notes = build_plan(args.model, budget_s=args.budget_s)
            print(format_plan(entries, notes))
            return 0
        if args.action == 'report':
            return 1 if write_report(args.out) else 0
        command = 'python -m logoformer_timm.bench.gpu ' + ' '.join(sys.argv[1:] if argv is None else argv)
        run_plan(args.out, dry_run=args.dry_run, budget_s=args.budget_s, models=args.model, device=args.device,
                 command=os.environ.get('LOGOFORMER_GPU_COMMAND', command),
                 gemm_size=512 if args.dry_run else 8192, copy_bytes=2 ** 20 if args.dry_run else 2 ** 30)
        with open(os.path.join(args.out, 'results.json')) as f:
            problems = check_results(json.load(f))
        return 1 if problems else 0
    return run_cli(body)

