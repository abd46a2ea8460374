"""The alternating before / after runs of ``benchmarks/flops.py`` (``benchmarks/results/reproduce.sh``, section
"einops kernels") as one table: ``python benchmarks/einops_kernels_combine.py RUNS_DIR OUT_STEM`` writes OUT_STEM.md and .json.

RUNS_DIR holds ``einops_kernels_{before,after}_{round}.json``; per grid point the table gives each round's median
step time of both versions, their ratio per round, the median ratio and the ratio of the best p10 times.
"""
import json
import statistics
import sys
from pathlib import Path

RUN_ARGS = ('--model logoformer_base --grid clip=16x112,32x224 --grid torchcompile=none,inductor --bench inference '
            '--threads 1 -b 1 --num-warm-iter 2 --num-bench-iter 5')


def joined(values, fmt: str) -> str:
    return ' / '.join(format(v, fmt) for v in values)


def main(argv=None) -> int:
    """Read RUNS_DIR's runs, write OUT_STEM.md and OUT_STEM.json, print the table."""
    runs_dir, out_stem = (Path(a) for a in (argv if argv is not None else sys.argv[1:]))
    runs = {}
    for path in sorted(runs_dir.glob('einops_kernels_*_*.json')):
        version, round_ = path.stem.split('_')[-2:]
        runs[version, int(round_)] = json.loads(path.read_text())
    rounds = sorted({r for _, r in runs})
    rows, lines = [], []
    for point in [row['grid'] for row in runs['before', rounds[0]]['results']]:
        step, p10 = {'before': [], 'after': []}, {'before': [], 'after': []}
        for (version, r), data in sorted(runs.items()):
            row = next(x for x in data['results'] if x['grid'] == point)
            step[version].append(row['infer_step_time'])
            p10[version].append(row['infer_step_time_p10'])
            rows.append(dict(
                version=version, round=r, grid=point, step_ms=row['infer_step_time'],
                p10_ms=row['infer_step_time_p10'], p90_ms=row['infer_step_time_p90'],
                load_avg_1m=row['infer_load_avg_1m']))
        ratios = [a / b for a, b in zip(step['after'], step['before'])]
        lines.append(
            f"| {point} | {joined(step['before'], '.0f')} | {joined(step['after'], '.0f')} | {joined(ratios, '.2f')} "
            f"| {statistics.median(ratios):.2f} | {min(p10['after']) / min(p10['before']):.2f} |")
    loads = [row['load_avg_1m'] for row in rows]
    md = [
        'Command: `benchmarks/results/reproduce.sh`, section "einops kernels": `python benchmarks/flops.py ' + RUN_ARGS +
        '`, run alternately (before, after, before, after, ...) from a copy of the package with the kernels before '
        f'(commit 7680fa1) and after (einops), rounds {", ".join(map(str, rounds))}; then '
        '`python benchmarks/einops_kernels_combine.py RUNS benchmarks/results/einops_kernels`.',
        '',
        'logoformer_base, inference, batch 1, float32, one thread, step time in ms (median of 5 steps per run). '
        f'Load average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f} on 2 cores (other jobs '
        'shared the machine); the spread between rounds of one version is the noise.',
        '',
        '| grid point | before ms (per round) | after ms (per round) | after / before (per round) | median ratio '
        '| best p10 after / before |',
        '|---|---|---|---|---|---|',
        *lines,
    ]
    out_stem.with_suffix('.md').write_text('\n'.join(md) + '\n')
    out_stem.with_suffix('.json').write_text(json.dumps(dict(
        commands=[runs[k]['command'] for k in sorted(runs)],
        notes={f'{v}_{r}': runs[v, r]['notes'] for v, r in sorted(runs)}, results=rows), indent=1) + '\n')
    print('\n'.join(md))
    return 0


if __name__ == '__main__':
    sys.exit(main())
