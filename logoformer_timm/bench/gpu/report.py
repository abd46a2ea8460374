"""The report of a GPU benchmark run: the results folder (``results.json``, ``results.md`` / ``.csv``,
``summary.md``), each row's fraction of the matmul peak, the CUDA tests' outcome, and the check that no figure
in it is impossible."""
import json
import os
import re
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..config import BenchmarkError
from ..report import write_results
from ..timing import set_peak_fractions
from .plan import PRECISIONS, Entry

__all__ = ['format_ceilings', 'set_fractions', 'save_results', 'format_summary', 'check_results', 'write_report']


def format_ceilings(c: Dict[str, float]) -> str:
    """The ceilings as one line: matmul TFLOP/s per precision and the copy bandwidth."""
    return (f'matmul fp32 {c["gemm_float32_gflops"] / 1e3:.1f}, tf32 {c["gemm_tf32_gflops"] / 1e3:.1f}, '
            f'bf16 {c["gemm_amp_bfloat16_gflops"] / 1e3:.1f} TFLOP/s; copy {c["copy_gbps"]:.0f} GB/s')


def set_fractions(results: Dict[str, Any]) -> None:
    """Each row's % peak: of its precision's matmul peak, the higher of the start and end measurements; float32
    rows also get ``*_tf32_peak_fraction``, of the TF32 matmul peak (PyTorch runs float32 convolutions in TF32 by
    default, so a float32 model can outrun the float32 matmul), left empty above 1 like the other."""
    start, end = results['ceilings_start'], results.get('ceilings_end') or results['ceilings_start']
    for precision in PRECISIONS:
        key = f'gemm_{precision}_gflops'
        set_peak_fractions([r for r in results['rows'] if r['precision'] == precision], max(start[key], end[key]))
    tf32 = max(start['gemm_tf32_gflops'], end['gemm_tf32_gflops'])
    for row in results['rows']:
        for p in ('infer', 'train'):
            achieved = row.get(f'{p}_achieved_gflops_per_sec')
            if row['precision'] == 'float32' and achieved is not None and tf32:
                row[f'{p}_tf32_peak_fraction'] = achieved / tf32 if achieved <= tf32 else None


def save_results(out: str, results: Dict[str, Any]) -> None:
    """Write ``out/results.json`` atomically (a run cut short never leaves half a file)."""
    tmp = os.path.join(out, 'results.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(results, f, indent=2, default=str)
        f.write('\n')
    os.replace(tmp, os.path.join(out, 'results.json'))



def _tests(out: str) -> Dict[str, Any]:
    """The CUDA tests' outcome from ``pytest_cuda.xml`` (junit): counts and the failed / skipped ones."""
    path = os.path.join(out, 'pytest_cuda.xml')
    if not os.path.exists(path):
        return dict(ran=False)
    root = ET.parse(path).getroot()
    cases, failed, skipped = 0, [], []
    for case in root.iter('testcase'):
        cases += 1
        name = f'{case.get("classname", "")}.{case.get("name", "")}'
        for tag in ('failure', 'error'):
            for el in case.findall(tag):
                failed.append(f'{name}: {(el.get("message") or "")[:200]}')
        for el in case.findall('skipped'):
            skipped.append(f'{name}: {(el.get("message") or "")[:200]}')
    return dict(ran=True, cases=cases, failed=failed, skipped=skipped,
                passed=cases - len(failed) - len(skipped))


_SUMMARY_COLUMNS = (('model', 'model', 's'), ('clip', 'clip', 's'), ('batch', 'batch', 'd'),
                    ('precision', 'precision', 's'), ('compiled', 'compiled', 's'), ('mode', 'mode', 's'),
                    ('gmacs', 'GMACs/clip', '.2f'), ('clips_s', 'clips/s', '.1f'), ('ms', 'ms', '.2f'),
                    ('p10_p90', 'p10-p90 ms', 's'), ('mem', 'peak MB', '.0f'), ('fraction', '% peak', '.1%'),
                    ('tf32_fraction', '% TF32 peak', '.1%'), ('note', 'note', 's'))


def _summary_cells(row: Dict[str, Any]) -> Dict[str, Any]:
    p = 'infer' if row['mode'] == 'inference' else 'train'
    return dict(model=row['model'], clip=row['clip'], batch=row[f'{p}_batch_size'], precision=row['precision'],
                compiled='yes' if row['compiled'] else 'no', mode=row['mode'],
                gmacs=row['infer_gmacs'] if p == 'infer' else row['train_gmacs'],
                clips_s=row[f'{p}_samples_per_sec'], ms=row[f'{p}_step_time'],
                p10_p90=f'{row[f"{p}_step_time_p10"]:.2f}-{row[f"{p}_step_time_p90"]:.2f}',
                mem=row.get(f'{p}_peak_mem_mb'), fraction=row.get(f'{p}_peak_fraction'),
                tf32_fraction=row.get(f'{p}_tf32_peak_fraction'),
                note='; '.join(x for x in (row.get(f'{p}_warning'), row.get(f'{p}_batch_note')) if x))


def format_summary(results: Dict[str, Any], tests: Dict[str, Any]) -> str:
    """``summary.md``: device, ceilings, tests, one line per measured entry, and every entry not measured."""
    env, dry = results['environment'], results['dry_run']
    lines = ['# GPU benchmark' + (' - DRY RUN: fake timings on CPU, not a measurement' if dry else ''), '']
    lines += [f'Command: `{results["command"]}`', '',
              f'{env["device_name"]}, {env.get("total_memory_mb", 0) / 1e3:.0f} GB; torch {env["torch"]} (CUDA '
              f'{env["cuda"]}), timm {env["timm"]}, Python {env["python"]}; started {results["started"]}, '
              f'{results.get("wall_s", 0):.0f} s of a {results["budget_s"]:.0f} s budget. float32 as PyTorch sets it: '
              + ', '.join(f'{k}={v}' for k, v in env['matmul'].items()) + '.', '']
    if env.get('sdpa_backends'):
        lines += ['SDPA kernels per backend in one inference pass (16x112, batch 2): ' + '; '.join(
            f'{k}: {v}' for k, v in env['sdpa_backends'].items()) + '.', '']
    lines += ['## Ceilings (this run)', '', '| | start | end |', '|---|---|---|']
    start, end = results['ceilings_start'], results.get('ceilings_end') or {}
    for key, name in (('gemm_float32_gflops', 'matmul float32 (as set), TFLOP/s'),
                      ('gemm_tf32_gflops', 'matmul tf32, TFLOP/s'),
                      ('gemm_amp_bfloat16_gflops', 'matmul bf16, TFLOP/s')):
        lines.append(f'| {name} | {start[key] / 1e3:.1f} | {_fmt(end.get(key), 1e3)} |')
    lines += [f'| device-to-device copy, GB/s (read + write) | {start["copy_gbps"]:.0f} | '
              f'{_fmt(end.get("copy_gbps"), 1)} |', '',
              '% peak = counted FLOPs per second / the matmul peak of the row\'s precision (float32 rows: float32 '
              'as set, bf16 rows: bf16), the higher of start and end; above 100 % it is left empty and the note '
              'says why. float32 rows also give % of the TF32 matmul peak: PyTorch runs float32 convolutions (the '
              'ResNet-18 stem) in TF32 unless told otherwise.', '']
    lines += ['## CUDA tests', '']
    if not tests.get('ran'):
        lines += ['Not run (no pytest_cuda.xml in this folder).', '']
    else:
        lines += [f'{tests["passed"]} passed, {len(tests["failed"])} failed, {len(tests["skipped"])} skipped of '
                  f'{tests["cases"]}.', ''] + [f'- failed: {t}' for t in tests['failed']] + [
                  f'- skipped: {t}' for t in tests['skipped']] + ['']
    lines += ['## Measured', '']
    cells = [_summary_cells(r) for r in results['rows']]
    lines.append('| ' + ' | '.join(h for _, h, _ in _SUMMARY_COLUMNS) + ' |')
    lines.append('|' + '---|' * len(_SUMMARY_COLUMNS))
    for c in cells:
        lines.append('| ' + ' | '.join('' if c[k] is None else format(c[k], f).replace('|', '/')
                                       for k, _, f in _SUMMARY_COLUMNS) + ' |')
    not_measured = [e for e in results['entries'] if e['status'] != 'measured']
    lines += ['', f'## Not measured ({len(not_measured)} of {len(results["entries"])} entries)', '']
    lines += [f'- {n}' for n in results.get('notes', [])]
    reasons: Dict[str, List[str]] = {}
    for e in not_measured:
        key = re.sub(r' \(est [0-9.]+ s\)|: [0-9]+ s left, entry est [0-9.]+ s', '', e['reason'])
        key = f'{e["status"]}: {key}'
        reasons.setdefault(key, []).append(Entry(**{k: v for k, v in e.items()}).label)
    for reason, labels in reasons.items():
        lines.append(f'- {reason} ({len(labels)}): ' + ', '.join(labels[:8]) + (' ...' if len(labels) > 8 else ''))
    return '\n'.join(lines) + '\n'


def _fmt(value: Optional[float], div: float) -> str:
    return '' if value is None else f'{value / div:.1f}'


def check_results(results: Dict[str, Any], texts: Sequence[str] = ()) -> List[str]:
    """Problems with a results dict and its report texts: missing columns, a fraction above 1, a printed
    percentage above 100 %, an entry without a status or reason. Empty when all is well."""
    problems = []
    needed = ('model', 'infer_gmacs', 'train_gmacs', 'param_count', 'precision', 'device_name', 'gemm_gflops_per_sec',
              'flop_counter', 'entry', 'mode', 'clip', 'compiled')
    for row in results['rows']:
        p = 'infer' if row['mode'] == 'inference' else 'train'
        missing = [c for c in needed + tuple(f'{p}_{c}' for c in ('samples_per_sec', 'step_time', 'batch_size',
                                                                     'peak_fraction', 'achieved_gflops_per_sec'))
                   if c not in row]
        if missing:
            problems.append(f'{row.get("entry")}: missing columns {", ".join(missing)}')
        for column in (f'{p}_peak_fraction', f'{p}_tf32_peak_fraction'):
            fraction = row.get(column)
            if fraction is not None and not 0 <= fraction <= 1:
                problems.append(f'{row.get("entry")}: {column} {fraction} outside [0, 1]')
    for e in results['entries']:
        if e['status'] not in ('measured', 'skipped', 'failed'):
            problems.append(f'{Entry(**e).label}: status {e["status"]!r} after the run')
        elif e['status'] != 'measured' and not e['reason']:
            problems.append(f'{Entry(**e).label}: {e["status"]} without a reason')
    for text in texts:
        for m in re.finditer(r'(\d+(?:\.\d+)?)\s?%', text):
            if float(m.group(1)) > 100:
                problems.append(f'a printed percentage above 100: {text[max(0, m.start() - 60):m.end()]!r}')
    return problems


def write_report(out: str, log: Callable[[str], None] = print) -> List[str]:
    """From ``out/results.json`` (and ``pytest_cuda.xml`` if there): ``summary.md``, ``results.md`` and
    ``results.csv``; the fractions are set again and the whole is checked (:func:`check_results`). Returns the
    problems found (also logged)."""
    path = os.path.join(out, 'results.json')
    if not os.path.exists(path):
        raise BenchmarkError(f'--out {out}: no results.json there (run the benchmark first).')
    with open(path) as f:
        results = json.load(f)
    for e in results['entries']:  # a run cut short: what never ran says so
        if e['status'] == 'planned':
            e['status'], e['reason'] = 'skipped', 'not reached: the run ended before it (time limit or a crash)'
    set_fractions(results)
    results['tests'] = _tests(out)
    save_results(out, results)
    summary = format_summary(results, results['tests'])
    header, notes = results['command'], f'{results["environment"]["device_name"]}; see summary.md'
    rows = [dict(r) for r in results['rows']]
    if rows:
        write_results(rows, os.path.join(out, 'results.md'), 'md', header=header, notes=notes)
        write_results(rows, os.path.join(out, 'results.csv'), 'csv', header=header, notes=notes)
    with open(os.path.join(out, 'results.md') if rows else os.devnull) as f:
        md = f.read()
    problems = check_results(results, [summary, md])
    if problems:
        summary += '\n## Problems found by the check\n\n' + '\n'.join(f'- {p}' for p in problems) + '\n'
    with open(os.path.join(out, 'summary.md'), 'w') as f:
        f.write(summary)
    measured = sum(e['status'] == 'measured' for e in results['entries'])
    log(f'report: {measured} of {len(results["entries"])} entries measured; {len(problems)} problem(s); '
        f'written to {out}/summary.md, results.md, results.csv, results.json')
    for p in problems:
        log(f'problem: {p}')
    return problems

