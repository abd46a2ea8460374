"""The plan of the GPU benchmark: every entry of the full matrix (model, clip, batch, precision, compiler setting,
mode) in running order, its estimated time and memory, and why the entries left out are left out (a rule of the
plan or the time budget)."""
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm

from ..counting import count_model
from ..models import ModelSpec, protocol_clip, resolve_models

__all__ = ['Entry', 'build_plan', 'format_plan', 'peer_models', 'predicted_mb', 'DEFAULT_BUDGET_S', 'PLAN_BUDGET']

CLIPS = ((16, 112), (32, 224))
BATCHES = (1, 32, 128)
PRECISIONS = ('float32', 'amp_bfloat16')
MODES = ('inference', 'train')
LOGO_MODELS = ('logoformer_tiny', 'logoformer_small', 'logoformer_base')
JOINT = 'logoformer_base[block_types=joint]'
PEER_PATTERNS = ('former_dfer*', 'mae_dfer*', 'dfer_clip*', 's2d*')
# compiled entries (model, frames, mode), in running order: the serving setting (bf16, inference batch 128, training
# batch 32) of logoformer_base, its joint twin at the long clip, then training and the smaller variants
COMPILED = (('logoformer_base', 16, 'inference'), ('logoformer_base', 32, 'inference'), (JOINT, 32, 'inference'),
            ('logoformer_base', 16, 'train'), ('logoformer_tiny', 16, 'inference'),
            ('logoformer_small', 16, 'inference'), (JOINT, 16, 'inference'), (JOINT, 16, 'train'))

# running order, by (compiled, mode, precision): what users of DFER models on a GPU ask first comes first
_GROUPS = {(False, 'inference', 'amp_bfloat16'): 0, (False, 'train', 'amp_bfloat16'): 1,
           (True, 'inference', 'amp_bfloat16'): 2, (False, 'inference', 'float32'): 3,
           (False, 'train', 'float32'): 4, (True, 'train', 'amp_bfloat16'): 5}

# for the plan's estimate and the dry run's fakes only (a run measures its own): an NVIDIA H200's published figures
ASSUMED_DEVICE = 'NVIDIA H200'
ASSUMED_MEMORY_MB = 139 * 2 ** 30 / 1e6
ASSUMED_GFLOPS = {'float32': 50e3, 'tf32': 400e3, 'amp_bfloat16': 750e3}
ASSUMED_COPY_GBPS = 4300.
ASSUMED_EFFICIENCY = {'inference': 0.35, 'train': 0.25}  # fraction of the matmul peak a model reaches
LAUNCH_FLOOR_S = {'inference': 0.004, 'train': 0.012}  # eager step time floor at small batch (kernel launches)
COMPILE_S = {'inference': 35., 'train': 70.}  # inductor compile of one model and shape (a guess for 16 CPU cores)
BUILD_S = .5  # building one model on the device
TRAIN_MB_PER_GMAC = 4.4  # activations saved per train GMAC of one clip, float32 (saved_activations.md, base 32x224)
INFER_MB_PER_GMAC = 2.5
MEMORY_HEADROOM = 0.85  # an entry runs when its predicted peak is under this share of the device's memory
DEFAULT_BUDGET_S = 150.
PLAN_BUDGET = 'plan budget'


@dataclass
class Entry:
    """One measurement of the plan, its estimate and what became of it."""
    model: str
    frames: int
    img_size: int
    batch_size: int
    precision: str
    compile: bool
    mode: str
    group: int = 0
    gmacs: float = 0.  # per clip, of this mode (forward; forward + backward for train)
    param_count: float = 0.
    est_step_s: float = 0.
    est_s: float = 0.
    num_warm_iter: int = 2
    num_bench_iter: int = 10
    status: str = 'planned'  # planned, measured, skipped, failed
    reason: str = ''
    wall_s: Optional[float] = None

    @property
    def label(self) -> str:
        """A readable key: model, clip, batch, precision, compiler, mode."""
        return (f'{self.model} {self.frames}x{self.img_size}x{self.img_size} b{self.batch_size} {self.precision} '
                f'{"compiled" if self.compile else "eager"} {self.mode}')


def peer_models() -> Tuple[List[Tuple[str, Tuple[int, int]]], List[str]]:
    """The DFER peers registered now (timm names matching :data:`PEER_PATTERNS`, each with its protocol clip) and
    a reason per pattern that matched nothing."""
    found, missing = [], []
    for pattern in PEER_PATTERNS:
        names = [n for n in timm.list_models(pattern) if n.startswith(pattern.rstrip('*'))]
        if not names:
            missing.append(f'{pattern}: no such timm model is registered in this checkout')
        found += [(n, protocol_clip(ModelSpec(n))) for n in names]
    return found, missing


def _est_step(gmacs: float, batch: int, precision: str, mode: str) -> float:
    flops = 2 * gmacs * 1e9 * batch
    return max(flops / (ASSUMED_EFFICIENCY[mode] * ASSUMED_GFLOPS[precision] * 1e9), LAUNCH_FLOOR_S[mode])


def _iterations(step_s: float, compile: bool) -> Tuple[int, int]:
    """(warm-up, timed) steps: about 0.5 s of timed steps, 5 to 15 of them."""
    timed = int(min(15, max(5, round(.5 / max(step_s, 1e-3)))))
    return (1 if compile else 2), timed


def _rule(model: str, peer: bool, frames: int, batch: int, precision: str, compile: bool, mode: str) -> str:
    """Why the plan leaves an entry of the full matrix out ('' = it is planned)."""
    if compile and peer:
        return 'compiled: LOGO-Former and the joint baseline only (compile time)'
    if compile and (model, frames, mode) not in COMPILED:
        return (f'compiled: not this model, clip and mode (compile time; the plan compiles {len(COMPILED)}: '
                'COMPILED in logoformer_timm/bench/gpu/plan.py)')
    if compile and precision != 'amp_bfloat16':
        return 'compiled: bf16 autocast only (the serving precision; compile time)'
    if compile and batch != (128 if mode == 'inference' else 32):
        return f'compiled {mode}: batch {128 if mode == "inference" else 32} only (compile time)'
    return ''


def build_plan(models: Optional[Sequence[str]] = None, count_fn: Callable = count_model,
               budget_s: float = DEFAULT_BUDGET_S) -> Tuple[List[Entry], List[str]]:
    """The full matrix as entries in running order, each with its estimate (planned, or skipped with a reason),
    and the lines saying which peers are absent. ``models`` restricts it (default: the variants, the joint
    baseline and the peers found)."""
    peers, notes = peer_models()
    if models is None:
        chosen = [(m, CLIPS, False) for m in (*LOGO_MODELS, JOINT)] + [(n, (clip,), True) for n, clip in peers]
    else:
        peer_clips = dict(peers)
        chosen = [(m, (peer_clips[m],) if m in peer_clips else CLIPS, m in peer_clips) for m in models]
    entries: List[Entry] = []
    for model, clips, peer in chosen:
        spec = resolve_models([model])[0]
        for frames, size in clips:
            count = count_fn(spec, frames, size)
            for compile in (False, True):
                for mode in MODES:
                    for precision in PRECISIONS:
                        for batch in BATCHES:
                            gmacs = count.infer.gmacs if mode == 'inference' else count.train_gmacs
                            e = Entry(model, frames, size, batch, precision, compile, mode, gmacs=gmacs,
                                      param_count=count.param_count)
                            e.group = _GROUPS.get((compile, mode, precision), len(_GROUPS))
                            e.est_step_s = _est_step(gmacs, batch, precision, mode)
                            e.num_warm_iter, e.num_bench_iter = _iterations(e.est_step_s, compile)
                            steps = e.num_warm_iter + e.num_bench_iter + (5 if compile else 0)
                            e.est_s = BUILD_S + steps * e.est_step_s + (COMPILE_S[mode] if compile else 0)
                            e.reason = _rule(model, peer, frames, batch, precision, compile, mode)
                            e.status = 'skipped' if e.reason else 'planned'
                            entries.append(e)
    # batch 1 first in each group (its memory predicts the larger batches'); compiled ones in COMPILED's order
    order = {key: i for i, key in enumerate(COMPILED)}
    entries.sort(key=lambda e: (e.group, order.get((e.model, e.frames, e.mode), 0) if e.compile else 0,
                                e.frames * e.img_size ** 2, e.batch_size))
    total = 0.
    for e in entries:
        if e.status == 'planned':
            if total + e.est_s > budget_s:
                e.status, e.reason = 'skipped', f'{PLAN_BUDGET}: {budget_s:.0f} s would be exceeded (est {e.est_s:.1f} s)'
            else:
                total += e.est_s
    return entries, notes


def format_plan(entries: Sequence[Entry], notes: Sequence[str] = ()) -> str:
    """The plan as text: planned entries with their estimate, the skipped ones grouped by reason."""
    planned = [e for e in entries if e.status == 'planned']
    lines = [f'{len(planned)} of {len(entries)} entries planned, estimated {sum(e.est_s for e in planned):.0f} s '
             f'on an H200 (assumed {ASSUMED_GFLOPS["amp_bfloat16"] / 1e3:.0f} TFLOP/s bf16, '
             f'{ASSUMED_GFLOPS["float32"] / 1e3:.0f} fp32; compile {COMPILE_S["inference"]:.0f} / '
             f'{COMPILE_S["train"]:.0f} s per model inference / train):']
    lines += [f'  {e.label}: {e.num_warm_iter}+{e.num_bench_iter} steps, est {e.est_s:.1f} s' for e in planned]
    reasons: Dict[str, int] = {}
    for e in entries:
        if e.status != 'planned':
            key = re.sub(r' \(est [0-9.]+ s\)', '', e.reason)
            reasons[key] = reasons.get(key, 0) + 1
    lines += ['skipped:'] + [f'  {n} entries: {r}' for r, n in reasons.items()] + [f'  {n}' for n in notes]
    return '\n'.join(lines)



def predicted_mb(entry: Entry, batch1_mb: Optional[float]) -> float:
    """Peak memory of ``entry`` from the same setting's batch-1 peak (weights, plus per clip the rest)."""
    fixed = entry.param_count * 4 * (4 if entry.mode == 'train' else 1)  # MB: weights (+ grads, momentum, slack)
    if batch1_mb is None:  # no batch-1 run: the plan's own estimate
        per_mb = TRAIN_MB_PER_GMAC if entry.mode == 'train' else INFER_MB_PER_GMAC
        per_clip = entry.gmacs * per_mb * (0.6 if entry.precision != 'float32' else 1.)
    else:
        per_clip = max(batch1_mb - fixed, 0.)
    return fixed + entry.batch_size * per_clip

