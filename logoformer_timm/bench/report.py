"""The result columns and their writing: csv, json and markdown files, the readable tables and the sweep plot."""
import csv
import json
import textwrap
from typing import Any, Dict, List, Optional, Sequence

from .config import BenchmarkError
from .sweeps import sweep_table

__all__ = ['COLUMNS', 'COLUMN_DOCS', 'DETAIL_COLUMN_DOCS', 'write_results', 'format_table', 'format_detail',
           'format_sweep', 'plot_sweep']

# the documented result columns, in output order (--detail adds the *_by_part columns of DETAIL_COLUMN_DOCS)
_MODE_COLUMNS = (
    'samples_per_sec', 'step_time', 'step_time_p10', 'step_time_p90', 'batch_size', 'img_size', 'frames',
    'peak_mem_mb', 'achieved_gflops_per_sec', 'peak_fraction', 'warm_steps', 'warning', 'batch_note', 'load_avg_1m')
COLUMNS = (
    'model', 'source', 'model_kwargs', 'clip', 'skipped', 'param_count', 'infer_gmacs', 'infer_gflops', 'train_gmacs',
    *[f'infer_{c}' for c in _MODE_COLUMNS], *[f'train_{c}' for c in _MODE_COLUMNS],
    'sweep', 'flop_counter', 'mem_method', 'gemm_gflops_per_sec', 'device', 'device_name', 'threads', 'precision',
    'channels_last', 'torchcompile', 'torch_version', 'timm_version',
)
COLUMN_DOCS = {
    'clip': 'frames x height x width of the row\'s clips (each model\'s own with --grid clip=protocol)',
    'skipped': 'why a peer was not measured at this clip (e.g. its architecture cannot tile it)',
    'param_count': 'parameters in millions',
    'infer_gmacs': 'multiply-adds of one clip forward, 1e9 (what DFER papers print as "GFLOPs")',
    'infer_gflops': 'FLOPs of one clip forward, 1e9 (= 2 x GMACs)',
    'train_gmacs': 'multiply-adds of one clip forward + backward, 1e9',
    'step_time': 'median step time (ms); _p10/_p90 the 10th/90th percentiles',
    'samples_per_sec': 'batch size / median step time',
    'peak_mem_mb': 'memory the model and its steps add (MB, 1e6 bytes); see mem_method',
    'achieved_gflops_per_sec': 'counted FLOPs per step / median step time',
    'peak_fraction': 'achieved GFLOP/s / gemm_gflops_per_sec; empty (with a warning) when above 1',
    'warm_steps': 'warm-up steps run before timing (more than --num-warm-iter: compiled until steady)',
    'warning': 'why a figure of the row is not to be trusted (above the matmul peak, compile not steady)',
    'batch_note': 'set when an out-of-memory error forced a smaller batch',
    'load_avg_1m': '1-minute load average of the machine right after the measurement (other jobs add noise)',
}
DETAIL_COLUMN_DOCS = {
    'infer_gmacs_by_part': 'GMACs of one clip per part; other = the rest',
    'infer_ms_by_part': 'ms per part in an eager inference pass (mean of num_bench_iter passes); other = outside the '
                        'parts (position embedding, norms, residual adds, pooling)',
    'infer_peak_mem_mb_by_part': 'per part: the most memory it allocated above what was live when it started (MB)',
    'infer_peak_op_by_part': 'per part: the operators running when it reached that peak (CPU profiler only)',
    'infer_parts_step_ms': 'the whole pass, timed in the same passes as the parts',
    'infer_parts_step_peak_mem_mb': 'the whole pass: the most memory allocated above what was live at its start',
    'parts_method': 'how the per-part time and memory were measured',
}


def _row_columns(rows: Sequence[Dict[str, Any]]) -> List[str]:
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    extra = [c for r in rows for c in r if c not in COLUMNS]
    return [c for c in COLUMNS if c in present] + list(dict.fromkeys(extra))


def _cell(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return f'{value:.4g}' if abs(value) < 1 else f'{value:.2f}'
    if isinstance(value, dict):
        return '; '.join(f'{k}={_cell(v)}' for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return ','.join(str(v) for v in value)
    return str(value)


def write_results(rows: Sequence[Dict[str, Any]], path: str, fmt: str, header: str = '', notes: str = '') -> None:
    """Write the rows as csv (every column), json (``command``, ``notes`` and every row under ``results``) or
    markdown (the command, notes, the stdout summary, the sweep, the detail, and every column)."""
    columns = _row_columns(rows)
    with open(path, 'w', newline='') as f:
        if fmt == 'json':
            json.dump(dict(command=header, notes=notes, results=list(rows)), f, indent=2, default=str)
            f.write('\n')
        elif fmt == 'csv':
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows({c: _cell(r.get(c)) for c in columns} for r in rows)
        elif fmt == 'md':
            f.write(f'Command: `{header}`\n\n{notes}\n\n' if header else '')
            f.write('## Summary\n\n' + format_table(rows, markdown=True) + '\n')
            table = sweep_table(rows)
            if table:
                f.write('## Sweep: LOGO-Former vs its block_types=joint twin\n\n' + format_sweep(table, True) + '\n')
            if any(r.get('infer_gmacs_by_part') for r in rows):
                f.write('## By part: GMACs, time and peak memory\n\n' + format_detail(rows, True) + '\n\n')
            f.write('## All columns\n\n' + _render(columns, [[_cell(r.get(c)) for c in columns] for r in rows],
                                                      markdown=True) + '\n')
        else:
            raise BenchmarkError(f'--results-format must be csv, json or md, got {fmt!r}.')


def _render(headers: Sequence[str], cells: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """A table as aligned text (first column left-aligned) or as GitHub markdown."""
    if markdown:
        lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
        lines += ['| ' + ' | '.join(c.replace('|', '/') for c in row) + ' |' for row in cells]
        return '\n'.join(lines) + '\n'
    table = [list(headers)] + [list(row) for row in cells]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return '\n'.join('  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in table)


_STDOUT_COLUMNS = (
    ('model', 'model', 's'), ('grid', 'grid point', 's'), ('clip', 'clip', 's'), ('param_count', 'params (M)', '.2f'), ('infer_gmacs', 'GMACs', '.2f'),
    ('infer_gflops', 'GFLOPs', '.2f'), ('infer_step_time', 'infer ms', '.1f'), ('infer_step_time_p10', 'p10', '.1f'),
    ('infer_step_time_p90', 'p90', '.1f'), ('infer_samples_per_sec', 'infer clips/s', '.2f'),
    ('infer_peak_mem_mb', 'infer MB', '.0f'), ('infer_achieved_gflops_per_sec', 'GFLOP/s', '.1f'),
    ('infer_peak_fraction', '% peak', '.1%'), ('train_step_time', 'train ms', '.1f'),
    ('train_samples_per_sec', 'train clips/s', '.2f'), ('train_peak_mem_mb', 'train MB', '.0f'),
    ('train_peak_fraction', 'train % peak', '.1%'), ('infer_batch_note', 'note', 's'),
    ('train_batch_note', 'train note', 's'), ('infer_warning', 'warning', 's'), ('train_warning', 'train warning', 's'),
    ('skipped', 'skipped', 's'),
)


def format_table(rows: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    """The readable summary table (the columns present in ``rows``)."""
    cols = [(k, h, f) for k, h, f in _STDOUT_COLUMNS if any(r.get(k) not in (None, '') for r in rows)]
    cells = [['' if r.get(k) is None else format(r[k], f) for k, _, f in cols] for r in rows]
    return _render([h for _, h, _ in cols], cells, markdown)


def format_detail(rows: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    """Per part (stem, token embedding, local/global/joint attention, MLP, head): GMACs and their share, and when
    measured the time, share of the pass, peak memory above the part's start and the operator at that peak."""
    blocks, methods = [], []
    for r in rows:
        gmacs = r.get('infer_gmacs_by_part') or {}
        ms, mem = r.get('infer_ms_by_part') or {}, r.get('infer_peak_mem_mb_by_part') or {}
        ops, step = r.get('infer_peak_op_by_part') or {}, r.get('infer_parts_step_ms')
        total = sum(gmacs.values()) or 1.
        headers = ['part', 'GMACs', '% GMACs'] + (['ms', '% time', 'peak MB', 'peak reached in'] if ms else [])
        cells = []
        for name in dict.fromkeys([*gmacs, *ms]):
            row = [name, _fmt(gmacs.get(name), '.3f'), _fmt(gmacs[name] / total if name in gmacs else None, '.1%')]
            if ms:
                row += [_fmt(ms.get(name), '.2f'), _fmt(ms[name] / step if name in ms and step else None, '.1%'),
                        _fmt(mem.get(name), '.1f'), ops.get(name, '')]
            cells.append(row)
        if ms:
            cells.append(['whole pass', _fmt(sum(gmacs.values()), '.3f'), '100.0%', _fmt(step, '.2f'), '100.0%',
                          _fmt(r.get('infer_parts_step_peak_mem_mb'), '.1f'), ''])
        title = r['model'] + (f' ({r["grid"]})' if r.get('grid') else '')
        blocks.append(f'{title}:\n' + _render(headers, cells, markdown))
        if r.get('parts_method'):
            methods.append(r['parts_method'])
    methods = list(dict.fromkeys(methods))
    return '\n\n'.join(blocks + [f'method: {m}' for m in methods])


def format_sweep(table: Sequence[Dict[str, Any]], markdown: bool = False) -> str:
    """The sweep: per point, LOGO-Former vs joint GMACs, time and memory, with ratios joint / LOGO-Former."""
    prefix = 'infer' if any('infer_ms' in e for e in table) else 'train'
    headers = ['point', 'model', 'GMACs', 'joint GMACs', 'x', f'{prefix} ms', 'joint ms', 'x', 'MB', 'joint MB', 'x']
    cells = []
    for e in table:
        mem, joint_mem = e.get(f'{prefix}_mem_mb'), e.get(f'joint_{prefix}_mem_mb')
        cells.append([
            f'{e["sweep"]}={e["point"]}', e['model'], f'{e["gmacs"]:.2f}', f'{e["joint_gmacs"]:.2f}',
            f'{e["gmacs_ratio"]:.2f}', _fmt(e.get(f'{prefix}_ms'), '.1f'), _fmt(e.get(f'joint_{prefix}_ms'), '.1f'),
            _fmt(e.get(f'{prefix}_time_ratio'), '.2f'), _fmt(mem, '.0f'), _fmt(joint_mem, '.0f'),
            _fmt(joint_mem / mem if mem and joint_mem else None, '.2f')])
    return _render(headers, cells, markdown)


def _fmt(value: Optional[float], spec: str) -> str:
    return '' if value is None else format(value, spec)


def plot_sweep(table: Sequence[Dict[str, Any]], path: str, title: str = '') -> None:
    """GMACs, step time and peak memory against each swept parameter, LOGO-Former vs joint (matplotlib)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise BenchmarkError('--plot needs matplotlib: pip install "logoformer-timm[bench]"') from e
    params = list(dict.fromkeys(e['sweep'] for e in table))
    prefix = 'infer' if any('infer_ms' in e for e in table) else 'train'
    metrics = (('gmacs', 'GMACs per clip'), (f'{prefix}_ms', f'{prefix} step time (ms)'),
               (f'{prefix}_mem_mb', f'{prefix} peak memory (MB)'))
    fig, axes = plt.subplots(len(params), 3, figsize=(13, 3.6 * len(params)), squeeze=False)
    for i, param in enumerate(params):
        for model in dict.fromkeys(e['model'] for e in table if e['sweep'] == param):
            entries = sorted((e for e in table if e['sweep'] == param and e['model'] == model),
                             key=lambda e: e['point'])
            xs = [e['point'] for e in entries]
            for ax, (key, ylabel) in zip(axes[i], metrics):
                ax.plot(xs, [e.get(key) for e in entries], 'o-', label=model)
                ax.plot(xs, [e.get(f'joint_{key}') for e in entries], 's--', label=f'{model} joint')
                ax.set_xlabel(param)
                ax.set_ylabel(ylabel)
                ax.set_xticks(xs)
                ax.grid(alpha=.3)
        axes[i][0].legend(fontsize=8)
    if title:
        fig.suptitle('\n'.join(textwrap.wrap(title, 160)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
