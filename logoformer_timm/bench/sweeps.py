"""LOGO-Former against its joint-attention twin across clip sizes (``--sweep``), and every combination of clip,
batch, precision and compiler (``--grid``)."""
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .config import GRID_PARAMS, PRECISIONS, SWEEP_PARAMS, BenchConfig, BenchmarkError
from .runner import benchmark
from .models import ModelSpec, joint_twin

__all__ = ['PROTOCOL_CLIP', 'parse_sweep', 'sweep', 'sweep_table', 'parse_grid', 'grid_configs']

PROTOCOL_CLIP = ('protocol',)  # the --grid clip value for "each model at its own protocol clip"


def parse_sweep(text: str) -> Tuple[str, List[int]]:
    """``num_frames=8,16,32`` -> ('num_frames', [8, 16, 32])."""
    key, sep, values = text.partition('=')
    if not sep or key not in SWEEP_PARAMS:
        raise BenchmarkError(f'--sweep expects one of {SWEEP_PARAMS} as name=v1,v2,..., got {text!r}.')
    try:
        points = [int(v) for v in values.split(',') if v.strip()]
    except ValueError as e:
        raise BenchmarkError(f'--sweep {key} values must be integers, got {values!r}.') from e
    if not points or min(points) < 1:
        raise BenchmarkError(f'--sweep {key} needs positive integers, got {values!r}.')
    return key, points


def sweep(
        specs: Sequence[ModelSpec],
        param: str,
        points: Sequence[int],
        cfg: BenchConfig,
        modes: Sequence[str] = ('inference',),
        gemm_gflops: Optional[float] = None,
        log: Callable[[str], None] = print,
) -> List[Dict[str, Any]]:
    """Each LOGO-Former spec and its same-width ``block_types=joint`` twin at every point of ``param``."""
    models = []
    for spec in specs:
        if spec.source != 'timm' or not spec.name.startswith('logoformer'):
            continue
        models += [spec] + [s for s in [joint_twin(spec)] if s]
    if not models:
        raise BenchmarkError('--sweep compares LOGO-Former models with their joint twin: select a logoformer_* model.')
    rows = []
    for point in points:
        point_cfg = replace(cfg, **{param: point})
        rows += benchmark(models, point_cfg, modes, gemm_gflops=gemm_gflops, sweep_label=f'{param}={point}', log=log)
    return rows


def parse_grid(text: str) -> Tuple[str, List[Any]]:
    """``clip=16x112,32x224`` (frames x size; ``protocol``: each model's own), ``batch_size=1,8``,
    ``precision=float32,amp_bfloat16`` or ``torchcompile=none,inductor`` -> (name, values)."""
    key, sep, values = text.partition('=')
    items = [v.strip().lower() for v in values.split(',') if v.strip()]
    if not sep or key not in GRID_PARAMS or not items:
        raise BenchmarkError(f'--grid expects one of {GRID_PARAMS} as name=v1,v2,..., got {text!r}.')
    if key == 'precision':
        if not set(items) <= set(PRECISIONS):
            raise BenchmarkError(f'--grid precision values must be among {", ".join(PRECISIONS)}, got {values!r}.')
        return key, items
    if key == 'torchcompile':
        return key, [None if v == 'none' else v for v in items]
    try:
        parsed = [PROTOCOL_CLIP if key == 'clip' and v == 'protocol' else
                  tuple(int(n) for n in v.split('x')) if key == 'clip' else (int(v),) for v in items]
    except ValueError:
        parsed = []
    if not parsed or any(p != PROTOCOL_CLIP and (len(p) != (2 if key == 'clip' else 1) or min(p) < 1)
                         for p in parsed):
        expected = 'FRAMESxSIZE items or protocol (16x112,32x224,protocol)' if key == 'clip' else 'positive integers'
        raise BenchmarkError(f'--grid {key} needs {expected}, got {values!r}.')
    return key, parsed if key == 'clip' else [p[0] for p in parsed]


def grid_configs(cfg: BenchConfig, grids: Sequence[Tuple[str, List[Any]]]) -> List[Tuple[str, BenchConfig]]:
    """Every combination of the ``--grid`` values, as (label, config); later grids vary fastest."""
    out = [('', cfg)]
    for key, values in grids:
        step = []
        for label, base in out:
            for value in values:
                if key == 'clip' and value == PROTOCOL_CLIP:
                    point, text = replace(base, protocol_clip=True), 'protocol'
                elif key == 'clip':
                    point = replace(base, num_frames=value[0], img_size=value[1], protocol_clip=False)
                    text = f'{value[0]}x{value[1]}'
                else:
                    point = replace(base, **{key: value})
                    text = 'none' if value is None else str(value)
                step.append((f'{label} {key}={text}'.strip(), point))
        out = step
    return out


def sweep_table(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per sweep point and LOGO-Former model: its GMACs, time and memory beside its joint twin's."""
    by_key = {(r['sweep'], r['model']): r for r in rows if r.get('sweep')}
    table = []
    for (point, label), row in by_key.items():
        if 'block_types=joint' in label:
            continue
        spec_kwargs = {**row['model_kwargs'], 'block_types': 'joint'}
        joint = by_key.get((point, ModelSpec(label.split('[')[0], spec_kwargs).label))
        if joint is None:
            continue
        param, value = point.split('=')
        entry = dict(sweep=param, point=int(value), model=label, joint_model=joint['model'],
                     gmacs=row['infer_gmacs'], joint_gmacs=joint['infer_gmacs'],
                     gmacs_ratio=joint['infer_gmacs'] / row['infer_gmacs'])
        for prefix in ('infer', 'train'):
            if f'{prefix}_step_time' in row:
                entry[f'{prefix}_ms'] = row[f'{prefix}_step_time']
                entry[f'joint_{prefix}_ms'] = joint[f'{prefix}_step_time']
                entry[f'{prefix}_time_ratio'] = joint[f'{prefix}_step_time'] / row[f'{prefix}_step_time']
                entry[f'{prefix}_mem_mb'] = row[f'{prefix}_peak_mem_mb']
                entry[f'joint_{prefix}_mem_mb'] = joint[f'{prefix}_peak_mem_mb']
        table.append(entry)
    return table
