"""A training run's folder on disk: the checkpoint folders ``last/`` and ``best/`` (what they hold, swapped in
atomically, the newest complete copy recovered after a kill), the ``.lock`` of a live run, the ``log.jsonl`` epoch
log (a torn last line repaired) and atomic JSON writes."""
import json
import logging
import os
import shutil
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, TextIO, Tuple

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..errors import UserError

__all__ = [
    'atomic_write', 'atomic_write_json', 'OutputLockedError', 'output_lock', 'CHECKPOINT_FILES', 'BEST_FILES', 'TrainingState',
    'recover_last', 'last_checkpoint', 'recover_best', 'read_log', 'rewrite_log', 'append_log', 'RUN_FILES', 'remove_run',
]

_logger = logging.getLogger(__name__)

CHECKPOINT_FILES = ('model.safetensors', 'config.json', 'train_state.safetensors', 'train_state.json')
BEST_FILES = ('model.safetensors', 'config.json', 'metrics.json')  # metrics.json / train_state.json: written last
# what a run writes in its folder (a fold's folder fold_N holds the same), killed runs' leftovers included
RUN_FILES = ('args.json', 'args.json.tmp', 'log.jsonl', 'log.jsonl.tmp', 'summary.json', 'summary.json.tmp', 'folds.md', 'folds.json',
             'folds.json.tmp', 'last', 'best', 'last.old', 'best.old', '.last.tmp', '.best.tmp')


@contextmanager
def atomic_write(path: str) -> Iterator[TextIO]:
    """A text file written whole or not at all: through ``PATH.tmp`` and a rename; a failure leaves no temporary."""
    tmp = f'{path}.tmp'
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path: str, data: Any) -> None:
    """Write JSON with :func:`atomic_write`, so readers never see half a file."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2)
        f.write('\n')


# ---------------------------------------------------------------------------------------------------- lock

class OutputLockedError(UserError, RuntimeError):
    """Another live run writes to the same ``--output`` folder."""


@contextmanager
def output_lock(folder: str) -> Iterator[None]:
    """Hold an exclusive lock on a run folder (``.lock``) while the block runs; a second run on it fails at once.

    ``flock``: the kernel releases the lock when its process dies, so a killed run never leaves it stuck.
    """
    import fcntl
    import socket
    os.makedirs(folder, exist_ok=True)
    f = open(os.path.join(folder, '.lock'), 'a+', encoding='utf-8')
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or 'another process'
            raise OutputLockedError(
                f'{folder} is in use by a running logoformer-train ({holder}); wait for it to finish, or pass '
                f'another --output.') from None
        f.seek(0)
        f.truncate()
        f.write(f'pid {os.getpid()} on {socket.gethostname()}\n')
        f.flush()
        yield
    finally:
        f.close()


def remove_run(folder: str) -> None:
    """Delete what a run wrote in ``folder`` (``--overwrite``; its lock held): logs, summaries, checkpoints and
    fold runs, including a killed run's leftovers. Other files are left alone."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name in RUN_FILES or (name.startswith('fold_') and os.path.isdir(path)):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


# -------------------------------------------------------------------------------------- checkpoint folders

def _cpu(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _swap_in(tmp_dir: str, final_dir: str) -> None:
    """Replace ``final_dir`` by ``tmp_dir``; at every instant a complete folder exists (``final``, ``.old`` or tmp)."""
    old = f'{final_dir}.old'
    if os.path.isdir(final_dir):
        if os.path.isdir(old):  # a stale copy: final is complete
            shutil.rmtree(old)
        os.rename(final_dir, old)
    os.rename(tmp_dir, final_dir)
    if os.path.isdir(old):
        shutil.rmtree(old)


def _fresh_dir(path: str) -> str:
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def _write_model_folder(folder: str, model: nn.Module, weights: Dict[str, torch.Tensor]) -> None:
    from timm.models._hub import save_config_for_hf
    save_file(_cpu(weights), os.path.join(folder, 'model.safetensors'))
    save_config_for_hf(model, os.path.join(folder, 'config.json'))


def _complete_epoch(folder: str, files: Tuple[str, ...]) -> Optional[int]:
    """The epoch of a checkpoint folder that holds all ``files`` (the last one written last, with the epoch)."""
    if not all(os.path.isfile(os.path.join(folder, name)) for name in files):
        return None
    try:
        with open(os.path.join(folder, files[-1]), encoding='utf-8') as f:
            return int(json.load(f)['epoch'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _recover(run_dir: str, name: str, files: Tuple[str, ...], upto: Optional[int] = None) -> Optional[str]:
    """Make ``run_dir/name`` the newest complete copy a kill may have left (``name``, ``name.old``, ``.name.tmp``).

    Copies newer than epoch ``upto`` are ignored. Returns the folder, or None when there is no complete copy.
    """
    final = os.path.join(run_dir, name)
    copies = [(epoch, folder) for folder in (final, f'{final}.old', os.path.join(run_dir, f'.{name}.tmp'))
              for epoch in [_complete_epoch(folder, files)] if epoch is not None and (upto is None or epoch <= upto)]
    if not copies:
        return None
    epoch, newest = max(copies, key=lambda c: c[0])  # the first of equals: final
    if newest.endswith('.old'):
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.rename(newest, final)
    elif newest != final:
        _swap_in(newest, final)
    if newest != final:
        _logger.warning('%s: recovered the epoch %d checkpoint from %s (a run was killed while saving)', final, epoch,
                        os.path.basename(newest))
    for stale in (f'{final}.old', os.path.join(run_dir, f'.{name}.tmp')):  # older or incomplete copies
        if os.path.isdir(stale):
            shutil.rmtree(stale)
    return final


def recover_last(run_dir: str) -> Optional[str]:
    """Make ``run_dir/last`` the newest complete checkpoint a kill left (one process only); None if there is none."""
    return _recover(run_dir, 'last', CHECKPOINT_FILES)


def last_checkpoint(run_dir: str) -> Optional[str]:
    """``run_dir/last`` when it is a complete checkpoint (after :func:`recover_last`), else None."""
    last = os.path.join(run_dir, 'last')
    return last if _complete_epoch(last, CHECKPOINT_FILES) else None


def recover_best(run_dir: str, upto: int) -> Optional[str]:
    """Make ``run_dir/best`` the newest complete copy of epoch ``upto`` or before (the resumed checkpoint's)."""
    return _recover(run_dir, 'best', BEST_FILES, upto=upto)


# ------------------------------------------------------------------------------------------ training state

def _flatten_optimizer(state: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Optimizer state_dict -> tensors (for safetensors) and JSON (everything else); no pickle."""
    tensors, scalars = {}, {}
    for pid, pstate in state['state'].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f'optimizer.{pid}.{key}'] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, dict(param_groups=state['param_groups'], scalars=scalars)


def _unflatten_optimizer(tensors: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith('optimizer.'):
            _, pid, key = name.split('.', 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in meta['scalars'].items():
        state.setdefault(int(pid), {}).update(values)
    return dict(state=state, param_groups=meta['param_groups'])


class TrainingState:
    """What a checkpoint saves and a resumed run restores: the training objects (restored in place) and the run's
    counters (finished epochs, optimizer updates, the best validation epoch)."""

    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 ema: Optional[nn.Module] = None, scaler: Optional[torch.amp.GradScaler] = None):
        self.model, self.criterion, self.optimizer, self.scheduler = model, criterion, optimizer, scheduler
        self.ema, self.scaler = ema, scaler
        self.epoch, self.num_updates = 0, 0
        self.best: Dict[str, Any] = dict(epoch=None, uar=-1.0, war=None)

    @property
    def eval_model(self) -> nn.Module:
        """The model that is validated and saved as ``model.safetensors``: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def save(self, run_dir: str, metrics: Dict[str, Any], is_best: bool) -> None:
        """Write ``run_dir/last`` (and ``best`` when ``is_best``) after epoch ``self.epoch``, each swapped in whole."""
        epoch = self.epoch
        tensors = {f'criterion.{k}': v for k, v in self.criterion.state_dict().items()}
        opt_tensors, opt_meta = _flatten_optimizer(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        if self.ema is not None:  # model.safetensors holds the evaluated (EMA) weights; keep the raw ones too
            tensors.update({f'raw_model.{k}': v for k, v in self.model.state_dict().items()})
        tensors['rng.torch'] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors.update({f'rng.cuda.{i}': s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        state = dict(
            epoch=epoch, num_updates=self.num_updates, optimizer=opt_meta, scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None, best=self.best, metrics=metrics)
        tmp = _fresh_dir(os.path.join(run_dir, '.last.tmp'))
        _write_model_folder(tmp, self.eval_model, self.eval_model.state_dict())
        save_file(_cpu(tensors), os.path.join(tmp, 'train_state.safetensors'))
        if is_best:
            best_tmp = _fresh_dir(os.path.join(run_dir, '.best.tmp'))
            for name in ('model.safetensors', 'config.json'):
                shutil.copy2(os.path.join(tmp, name), best_tmp)
            atomic_write_json(os.path.join(best_tmp, 'metrics.json'), dict(epoch=epoch, **metrics))
        # written last: a complete .last.tmp implies a complete .best.tmp, so resume can recover both
        atomic_write_json(os.path.join(tmp, 'train_state.json'), state)
        if is_best:
            _swap_in(best_tmp, os.path.join(run_dir, 'best'))
        _swap_in(tmp, os.path.join(run_dir, 'last'))

    def load(self, folder: str) -> None:
        """Restore the state saved in the checkpoint ``folder``: weights, optimizer, scheduler, RNG and counters."""
        with open(os.path.join(folder, 'train_state.json'), encoding='utf-8') as f:
            state = json.load(f)
        tensors = load_file(os.path.join(folder, 'train_state.safetensors'))
        weights = load_file(os.path.join(folder, 'model.safetensors'))
        if self.ema is not None:
            self.ema.module.load_state_dict(weights)
            weights = {k.removeprefix('raw_model.'): v for k, v in tensors.items() if k.startswith('raw_model.')}
        self.model.load_state_dict(weights)
        self.criterion.load_state_dict({k.removeprefix('criterion.'): v for k, v in tensors.items()
                                        if k.startswith('criterion.')})
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state['optimizer']))
        self.scheduler.load_state_dict(state['scheduler'])
        if self.scaler is not None and state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        torch.set_rng_state(tensors['rng.torch'])
        cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith('rng.cuda.'))]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
        self.epoch, self.num_updates, self.best = state['epoch'], state['num_updates'], state['best']


# ----------------------------------------------------------------------------------------------------- log

def _log_path(run_dir: str) -> str:
    return os.path.join(run_dir, 'log.jsonl')


def read_log(run_dir: str, upto: int) -> List[Dict[str, Any]]:
    """The log records of a run resumed after epoch ``upto``: epochs 1 to ``upto``, a torn last line dropped.

    A kill or a full disk mid-write tears the last line; a log that lost epochs is a ``ValueError``.
    """
    path = _log_path(run_dir)
    lines = []
    if os.path.isfile(path):
        with open(path, encoding='utf-8', errors='replace') as f:
            lines = [line for line in f.read().split('\n') if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f'{path}: line {number} is not JSON, so the log is damaged; restore it or start a '
                                 f'new --output.') from None
            _logger.warning('%s: dropped its torn last line (written when the run was killed): %.60s', path, line)
    history = [r for r in records if r['epoch'] <= upto]
    logged = [r['epoch'] for r in history]
    if logged != list(range(1, upto + 1)):  # the summary would disagree with best/ and last/
        raise ValueError(
            f'{path} holds epochs {logged or "none"} but the checkpoint is after epoch {upto}: '
            f'the log was deleted or edited. Restore it, or start a new --output.')
    return history


def rewrite_log(run_dir: str, history: List[Dict[str, Any]]) -> None:
    """Make the log exactly ``history``: drops the lines of epochs after the checkpoint (a kill interrupted it)."""
    with atomic_write(_log_path(run_dir)) as f:
        for record in history:
            f.write(json.dumps(record) + '\n')


def append_log(run_dir: str, record: Dict[str, Any]) -> None:
    """Add one epoch's record to the log."""
    with open(_log_path(run_dir), 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')
