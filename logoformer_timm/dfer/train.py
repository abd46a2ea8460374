"""``logoformer-train``: train or fine-tune a LOGO-Former with the DFER protocol.

    logoformer-train --model logoformer_small --data-root DFEW --train-list lists/dfew/set_{fold}/train.txt \\
        --val-list lists/dfew/set_{fold}/test.txt --folds 1,2,3,4,5 --output runs/dfew

Defaults are the protocol's recipe (docs/architecture.md): SGD with momentum 0.9, lr 0.01, weight decay 1e-4, lr x0.1
every 40 epochs, 100 epochs, batch 32, 8 segments x 2 frames, one random-resized crop and flip per clip, CE plus
the compact loss on the pooled features (``--loss asl`` for the authors' code's asymmetric loss, ``--compact-weight 0``
for none). Optimizer and scheduler come from timm's factories (``--opt``, ``--sched``); constructor arguments without
a flag of their own go through ``--model-kwargs``, e.g. ``attn_drop_rate=0.2 global_pool_size='(2,1,1)'``.

Every epoch writes one JSON line to ``OUTPUT/log.jsonl`` and an atomic checkpoint folder ``OUTPUT/last`` (``best``
when the validation UAR improves): ``model.safetensors`` + ``config.json`` (a timm ``local-dir:`` folder), and
``train_state.safetensors`` + ``train_state.json`` (optimizer, scheduler, compact-loss centres, EMA, RNG, epoch).
``--resume OUTPUT`` continues from the last finished epoch and gives the same results as an uninterrupted run.
Under ``torchrun`` it trains with DistributedDataParallel (NCCL on GPU, gloo on CPU).
"""
import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..cli import ArgumentParser, check_output_dir, non_negative_int, positive_int, run_cli
from .datasets import collate_clips, default_num_workers
from ..weights.loading import create_model, label_names
from .evaluate import (
    DistInfo, ShardSampler, all_reduce_sum, atomic_write_json, build_dataset, evaluate, init_distributed)
from .loss import LOSSES, DferCriterion

__all__ = ['main', 'build_parser', 'train_run', 'output_lock', 'OutputLockedError']

_logger = logging.getLogger(__name__)

OPTIMISM_NOTE = (
    'best = the epoch with the highest validation UAR. When the validation list is the test split (the DFER '
    'protocol has no separate validation set), selecting it is optimistic; last = the final epoch, the unbiased number.')


class TrainStep(nn.Module):
    """Model and criterion in one module, so DDP syncs the compact-loss centres with the weights."""

    def __init__(self, model: nn.Module, criterion: DferCriterion):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def no_weight_decay(self) -> set:
        skip = {f'model.{n}' for n in getattr(self.model, 'no_weight_decay', lambda: set())()}
        return skip | {f'criterion.{n}' for n, _ in self.criterion.named_parameters()}

    def forward(self, clips: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        features = self.model.forward_head(self.model.forward_features(clips), pre_logits=True)
        logits = self.model.get_classifier()(features)
        loss, parts = self.criterion(logits, features, labels)
        return loss, logits.detach(), parts


class _ParseModelKwargs(argparse.Action):
    """``KEY=VALUE`` pairs -> dict, values read as Python literals (strings otherwise), like timm's ``ParseKwargs``."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if '=' not in v]
        if bad:
            raise argparse.ArgumentError(self, f'expects KEY=VALUE pairs, got {bad[0]!r}')
        from timm.utils import ParseKwargs
        ParseKwargs.__call__(self, parser, namespace, values, option_string)


# constructor arguments that have a flag of their own, so --model-kwargs must not set them
_FLAG_OF_KWARG = dict(num_classes='--num-classes', num_frames='--num-segments x --frames-per-segment',
                      img_size='--img-size', drop_rate='--drop', drop_path_rate='--drop-path',
                      stem_weights='--stem-weights')


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog='logoformer-train', description=__doc__.split('\n')[0])
    g = p.add_argument_group('model')
    g.add_argument('--model', default='logoformer_small', help='timm model name')
    g.add_argument('--pretrained', action='store_true', help='start from the published weights of --model (NAME.TAG)')
    g.add_argument('--checkpoint', help='start from weights: .safetensors file, checkpoint folder or hub/ folder')
    g.add_argument('--num-classes', type=positive_int, default=7, help='classes of the label set (a new head if it differs)')
    g.add_argument('--stem-weights', help='ResNet-18 weights for the stem: timm name or local file')
    g.add_argument('--img-size', type=positive_int, default=112)
    g.add_argument('--drop', type=float, default=0.0, help='dropout before the classifier')
    g.add_argument('--drop-path', type=float, default=0.1, help='stochastic depth rate')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=_ParseModelKwargs, metavar='KEY=VALUE',
                   help="other constructor arguments, values as Python literals, e.g. attn_drop_rate=0.2 "
                        "global_pool_size='(2,1,1)'")
    g.add_argument('--grad-checkpointing', action='store_true')
    g = p.add_argument_group('data')
    g.add_argument('--data-root', default='', help='root the list paths are relative to')
    g.add_argument('--train-list', help='training annotation list ("{fold}" is replaced with --folds)')
    g.add_argument('--val-list', help='validation annotation list ("{fold}" is replaced with --folds)')
    g.add_argument('--folds', help='comma-separated folds, e.g. 1,2,3,4,5 (DFEW protocol)')
    g.add_argument('--num-segments', type=positive_int, default=8)
    g.add_argument('--frames-per-segment', type=positive_int, default=2)
    g.add_argument('--crop-scale', type=float, nargs=2, default=(0.08, 1.0), help='random-resized crop area range')
    g.add_argument('--crop-ratio', type=float, nargs=2, default=(3 / 4, 4 / 3), help='random-resized crop aspect range')
    g.add_argument('--hflip', type=float, default=0.5, help='probability of flipping a clip')
    g.add_argument('--workers', type=non_negative_int, default=default_num_workers(),
                   help='DataLoader worker processes (default: min(4, CPU count))')
    g.add_argument('--skip-bad-clips', action='store_true', help='warn about and count bad clips instead of failing')
    g = p.add_argument_group('optimisation')
    g.add_argument('--epochs', type=positive_int, default=100)
    g.add_argument('--batch-size', type=positive_int, default=32, help='clips per optimizer step over all processes')
    g.add_argument('--grad-accum', type=positive_int, default=1, help='micro-batches per optimizer step')
    g.add_argument('--opt', default='momentum', help='timm optimizer name (momentum = SGD without Nesterov)')
    g.add_argument('--lr', type=float, default=0.01)
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--weight-decay', type=float, default=1e-4)
    g.add_argument('--clip-grad', type=float, help='clip the gradient norm')
    g.add_argument('--sched', default='step', help='timm scheduler name')
    g.add_argument('--decay-epochs', type=float, default=40)
    g.add_argument('--decay-rate', type=float, default=0.1)
    g.add_argument('--warmup-epochs', type=int, default=0)
    g.add_argument('--warmup-lr', type=float, default=1e-5)
    g.add_argument('--min-lr', type=float, default=0.0)
    g.add_argument('--loss', choices=LOSSES, default='ce',
                   help="classification term: ce (cross-entropy, --smoothing) or asl (timm's "
                        'AsymmetricLossSingleLabel(gamma_pos=1, gamma_neg=2, eps=0.1), as in the authors\' code)')
    g.add_argument('--compact-weight', type=float, default=0.001, help='lambda of the compact loss (0 disables it)')
    g.add_argument('--compact-margin', type=float, default=10.0, help='margin m between class centres')
    g.add_argument('--smoothing', type=float, default=0.0, help='label smoothing (--loss ce only)')
    g.add_argument('--model-ema', action='store_true', help='keep an EMA of the weights; validate and save the EMA')
    g.add_argument('--model-ema-decay', type=float, default=0.999)
    g.add_argument('--amp', action='store_true', help='autocast (bfloat16 on CPU, float16 + grad scaling on GPU)')
    g = p.add_argument_group('run')
    g.add_argument('--output', help='output folder')
    g.add_argument('--resume', metavar='OUTPUT', help='continue the run in OUTPUT from its last finished epoch')
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--deterministic', action='store_true', help='deterministic algorithms only (slower on GPU)')
    g.add_argument('--device', help='cpu, cuda, cuda:1 (default: cuda if available)')
    return p


# ---------------------------------------------------------------------------------------------- checkpoints

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


CHECKPOINT_FILES = ('model.safetensors', 'config.json', 'train_state.safetensors', 'train_state.json')
BEST_FILES = ('model.safetensors', 'config.json', 'metrics.json')  # metrics.json / train_state.json: written last


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


class OutputLockedError(RuntimeError):
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


# ------------------------------------------------------------------------------------------------- training

class Trainer:
    """One training run (one fold): model, optimiser, scheduler, EMA, loaders, checkpoints and logs."""

    def __init__(self, args: argparse.Namespace, run_dir: str, train_list: str, val_list: str, info: DistInfo):
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import ModelEmaV3

        self.args, self.run_dir, self.info = args, run_dir, info
        device = info.device
        torch.manual_seed(args.seed)  # same initial weights on every rank
        num_frames = args.num_segments * args.frames_per_segment
        self.model = create_model(
            args.model, args.checkpoint, args.pretrained, num_classes=args.num_classes, num_frames=num_frames,
            img_size=args.img_size, drop_rate=args.drop, drop_path_rate=args.drop_path,
            stem_weights=args.stem_weights, new_head=True, **args.model_kwargs).to(device)
        if args.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.criterion = DferCriterion(
            args.num_classes, self.model.num_features, args.compact_weight, args.compact_margin, args.smoothing,
            loss=args.loss).to(device)
        self.step_module = TrainStep(self.model, self.criterion)
        self.optimizer = create_optimizer_v2(
            self.step_module, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum)
        self.ema = ModelEmaV3(self.model, decay=args.model_ema_decay) if args.model_ema else None

        if args.batch_size % (info.world_size * args.grad_accum):
            raise ValueError(
                f'--batch-size {args.batch_size} must be divisible by processes x --grad-accum '
                f'({info.world_size} x {args.grad_accum}).')
        micro_batch = args.batch_size // (info.world_size * args.grad_accum)
        self.train_set = build_dataset(
            self.model, train_list, args.data_root, train=True, num_segments=args.num_segments,
            frames_per_segment=args.frames_per_segment, seed=args.seed, skip_bad_clips=args.skip_bad_clips,
            scale=args.crop_scale, ratio=args.crop_ratio, hflip=args.hflip)
        self.val_set = build_dataset(
            self.model, val_list, args.data_root, train=False, num_segments=args.num_segments,
            frames_per_segment=args.frames_per_segment, skip_bad_clips=args.skip_bad_clips)
        self.train_sampler = DistributedSampler(
            self.train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=args.seed)
        loader_args = dict(num_workers=args.workers, collate_fn=collate_clips, pin_memory=device.type == 'cuda')
        self.train_loader = DataLoader(
            self.train_set, batch_size=micro_batch, sampler=self.train_sampler, drop_last=False, **loader_args)
        self.val_loader = DataLoader(
            self.val_set, batch_size=micro_batch, sampler=ShardSampler(len(self.val_set), info.rank, info.world_size),
            **loader_args)
        self.updates_per_epoch = math.ceil(len(self.train_loader) / args.grad_accum)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
            decay_rate=args.decay_rate, warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr, min_lr=args.min_lr,
            updates_per_epoch=self.updates_per_epoch)
        self.amp_dtype = (torch.bfloat16 if device.type == 'cpu' else torch.float16) if args.amp else None
        self.scaler = torch.amp.GradScaler('cuda') if args.amp and device.type == 'cuda' else None

        self.ddp = DistributedDataParallel(self.step_module, device_ids=[device] if device.type == 'cuda' else None) \
            if info.enabled else self.step_module
        self.start_epoch, self.num_updates = 0, 0
        self.best = dict(epoch=None, uar=-1.0, war=None)
        self.history: List[Dict[str, Any]] = []
        last = None
        if args.resume:
            if info.is_main:
                _recover(run_dir, 'last', CHECKPOINT_FILES)
            if info.enabled:
                dist.barrier()
            last = os.path.join(run_dir, 'last') if _complete_epoch(os.path.join(run_dir, 'last'), CHECKPOINT_FILES) \
                else None
        if last:
            self._load_state(last)
            if info.is_main:
                _recover(run_dir, 'best', BEST_FILES, upto=self.start_epoch)
        else:  # dropout / drop-path draws differ per rank; a resumed run restored them above
            torch.manual_seed(args.seed + info.rank)

    # -- checkpoint state
    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _save(self, epoch: int, metrics: Dict[str, Any], is_best: bool) -> None:
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
        tmp = _fresh_dir(os.path.join(self.run_dir, '.last.tmp'))
        _write_model_folder(tmp, self._eval_model(), self._eval_model().state_dict())
        save_file(_cpu(tensors), os.path.join(tmp, 'train_state.safetensors'))
        if is_best:
            best_tmp = _fresh_dir(os.path.join(self.run_dir, '.best.tmp'))
            for name in ('model.safetensors', 'config.json'):
                shutil.copy2(os.path.join(tmp, name), best_tmp)
            atomic_write_json(os.path.join(best_tmp, 'metrics.json'), dict(epoch=epoch, **metrics))
        # written last: a complete .last.tmp implies a complete .best.tmp, so resume can recover both
        atomic_write_json(os.path.join(tmp, 'train_state.json'), state)
        if is_best:
            _swap_in(best_tmp, os.path.join(self.run_dir, 'best'))
        _swap_in(tmp, os.path.join(self.run_dir, 'last'))

    def _load_state(self, folder: str) -> None:
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
        self.start_epoch, self.num_updates, self.best = state['epoch'], state['num_updates'], state['best']
        log_path = os.path.join(self.run_dir, 'log.jsonl')
        self.history = _read_log(log_path, upto=self.start_epoch)
        logged = [r['epoch'] for r in self.history]
        if logged != list(range(1, self.start_epoch + 1)):  # the summary would disagree with best/ and last/
            raise ValueError(
                f'{log_path} holds epochs {logged or "none"} but the checkpoint is after epoch {self.start_epoch}: '
                f'the log was deleted or edited. Restore it, or start a new --output.')
        if self.info.is_main:
            _logger.info('resumed %s after epoch %d', self.run_dir, self.start_epoch)

    # -- epochs
    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        from tqdm import tqdm
        args, device, info = self.args, self.info.device, self.info
        self.step_module.train()
        self.train_sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        totals = torch.zeros(6, dtype=torch.float64)  # loss, classification term, intra, inter (sums), correct, clips
        skipped = 0
        autocast = torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        batches = len(self.train_loader)
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(self.train_loader, desc=f'epoch {epoch + 1}/{args.epochs}', disable=not info.is_main, leave=False)
        for i, (clips, labels, num_skipped) in enumerate(bar):
            skipped += num_skipped
            if not _all_ranks_have_data(len(labels), info):
                continue
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            step_now = (i + 1) % args.grad_accum == 0 or i + 1 == batches
            sync = nullcontext() if step_now or not info.enabled else self.ddp.no_sync()
            with sync:
                with autocast:
                    loss, logits, parts = self.ddp(clips, labels)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch + 1}, batch {i}; lower --lr.')
                scaled = loss / args.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            if step_now:
                self._optimizer_step()
            n = len(labels)
            totals += torch.tensor([
                loss.item() * n, parts[args.loss].item() * n, parts.get('intra', torch.zeros(())).item() * n,
                parts.get('inter', torch.zeros(())).item() * n, (logits.argmax(1) == labels).sum().item(), n],
                dtype=torch.float64)
            if info.is_main:
                bar.set_postfix(loss=f'{loss.item():.3f}', lr=f'{self.optimizer.param_groups[0]["lr"]:.2e}')
        totals = all_reduce_sum(torch.cat([totals, torch.tensor([float(skipped)], dtype=torch.float64)]).to(device),
                                info).cpu()
        clips_seen = max(totals[5].item(), 1)
        return dict(
            train_loss=totals[0].item() / clips_seen, **{f'train_{args.loss}': totals[1].item() / clips_seen},
            train_intra=totals[2].item() / clips_seen, train_inter=totals[3].item() / clips_seen,
            train_acc=totals[4].item() / clips_seen, train_clips=int(totals[5].item()),
            train_skipped_clips=int(totals[6].item()) + len(self.train_set.problems))

    def _optimizer_step(self) -> None:
        args = self.args
        params = [p for p in self.step_module.parameters() if p.requires_grad]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if args.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.num_updates += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.num_updates)
        self.scheduler.step_update(num_updates=self.num_updates)

    def run(self) -> Dict[str, Any]:
        """Train from the start (or resumed) epoch to ``--epochs``; return the run summary."""
        args, info = self.args, self.info
        log_path = os.path.join(self.run_dir, 'log.jsonl')
        if info.is_main:
            _truncate_log(log_path, self.history)
        if self.start_epoch == 0:
            self.scheduler.step(0)
        for epoch in range(self.start_epoch, args.epochs):
            start = time.time()
            lr = self.optimizer.param_groups[0]['lr']
            record = dict(epoch=epoch + 1, lr=lr, **self.train_epoch(epoch))
            val = evaluate(self._eval_model(), self.val_loader, args.num_classes, info, self.amp_dtype)
            val['skipped_clips'] += len(self.val_set.problems)
            record.update({f'val_{k}': v for k, v in val.items()})
            self.scheduler.step(epoch + 1, val['uar'])
            is_best = val['uar'] > self.best['uar']
            if is_best:
                self.best = dict(epoch=epoch + 1, uar=val['uar'], war=val['war'])
            record.update(best_epoch=self.best['epoch'], best_uar=self.best['uar'], time=round(time.time() - start, 3))
            self.history.append(record)
            if info.is_main:
                with open(log_path, 'a', encoding='utf-8') as f:
                    f.write(json.dumps(record) + '\n')
                self._save(epoch + 1, {f'val_{k}': v for k, v in val.items()}, is_best)
                print(f'epoch {epoch + 1}/{args.epochs}  loss {record["train_loss"]:.4f}  train acc '
                      f'{100 * record["train_acc"]:.2f}  val UAR {100 * val["uar"]:.2f}  WAR {100 * val["war"]:.2f}  '
                      f'({record["time"]:.1f}s)', flush=True)
            if info.enabled:
                dist.barrier()
        return self.summary()

    def summary(self) -> Dict[str, Any]:
        if not self.history:
            raise ValueError(f'{self.run_dir}: no finished epoch to summarise.')
        last = self.history[-1]
        summary = dict(
            last=dict(epoch=last['epoch'], uar=last['val_uar'], war=last['val_war']),
            best=dict(self.best),  # the epoch best/ holds
            epochs=self.args.epochs, note=OPTIMISM_NOTE, label_names=label_names(self.model),
            last_per_class=last['val_per_class'], last_confusion_matrix=last['val_confusion_matrix'])
        if self.info.is_main:
            atomic_write_json(os.path.join(self.run_dir, 'summary.json'), summary)
        return summary


def _all_ranks_have_data(n: int, info: DistInfo) -> bool:
    """True when every rank has clips in this batch (a batch of only bad clips is skipped by all ranks)."""
    if not info.enabled:
        return n > 0
    flag = torch.tensor([0 if n > 0 else 1], device=info.device)
    dist.all_reduce(flag)
    return flag.item() == 0


def _read_log(path: str, upto: int) -> List[Dict[str, Any]]:
    """The log records up to epoch ``upto``; a torn last line (a kill or a full disk mid-write) is dropped."""
    if not os.path.isfile(path):
        return []
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
    return [r for r in records if r['epoch'] <= upto]


def _truncate_log(path: str, history: List[Dict[str, Any]]) -> None:
    """Drop log lines of epochs after the checkpoint (written before a kill interrupted the checkpoint)."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        for record in history:
            f.write(json.dumps(record) + '\n')
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- entry point

def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        saved = os.path.join(args.resume, 'args.json')
        if not os.path.isfile(saved):
            raise FileNotFoundError(f'--resume {args.resume}: no args.json there; is it the --output of a run?')
        with open(saved, encoding='utf-8') as f:
            parser.set_defaults(**json.load(f))
        args = parser.parse_args(argv)  # the saved arguments, overridden by the ones given now
        args.output, args.resume = args.resume, args.resume
    missing = [f'--{n.replace("_", "-")}' for n in ('output', 'train_list', 'val_list') if not getattr(args, n)]
    if missing:
        raise ValueError(f'missing {", ".join(missing)} (or --resume OUTPUT of an earlier run).')
    owned = [k for k in args.model_kwargs if k in _FLAG_OF_KWARG]
    if owned:
        raise ValueError(f'--model-kwargs {owned[0]}=...: set it with {_FLAG_OF_KWARG[owned[0]]} instead.')
    if args.folds and '{fold}' not in args.train_list + args.val_list:
        raise ValueError('--folds needs "{fold}" in --train-list and --val-list, e.g. lists/dfew/set_{fold}/train.txt.')
    return args


def _folds(args: argparse.Namespace) -> List[Optional[int]]:
    if not args.folds:
        return [None]
    try:
        return [int(f) for f in str(args.folds).split(',') if f.strip()]
    except ValueError:
        raise ValueError(f'--folds must be comma-separated integers such as 1,2,3,4,5, got {args.folds!r}.') from None


def train_run(args: argparse.Namespace, info: DistInfo, fold: Optional[int] = None) -> Dict[str, Any]:
    """Train one run (one fold when ``fold`` is given); resumes when ``args.resume`` is set."""
    run_dir = args.output if fold is None else os.path.join(args.output, f'fold_{fold}')
    done = os.path.join(run_dir, 'summary.json')
    if args.resume and os.path.isfile(done):
        with open(done, encoding='utf-8') as f:
            summary = json.load(f)
        if summary['epochs'] == args.epochs:
            return summary
    os.makedirs(run_dir, exist_ok=True)
    fmt = (lambda s: s.replace('{fold}', str(fold))) if fold is not None else (lambda s: s)
    trainer = Trainer(args, run_dir, fmt(args.train_list), fmt(args.val_list), info)
    summary = trainer.run()
    if info.is_main:
        print(_summary_text(summary, fold))
    return summary


def _summary_text(summary: Dict[str, Any], fold: Optional[int]) -> str:
    head = f'fold {fold}: ' if fold is not None else ''
    last, best = summary['last'], summary['best']
    return (f'{head}last epoch {last["epoch"]}: UAR {100 * last["uar"]:.2f} WAR {100 * last["war"]:.2f} | '
            f'best epoch {best["epoch"]}: UAR {100 * best["uar"]:.2f} WAR {100 * best["war"]:.2f} (optimistic: '
            f'selected on the validation list)')


def folds_table(results: Dict[int, Dict[str, Any]]) -> str:
    """Markdown table of per-fold and mean last/best UAR and WAR (percent)."""
    rows = ['| fold | last UAR | last WAR | best UAR | best WAR | best epoch |', '|---|---|---|---|---|---|']
    for fold, s in results.items():
        rows.append(f'| {fold} | {100 * s["last"]["uar"]:.2f} | {100 * s["last"]["war"]:.2f} | '
                    f'{100 * s["best"]["uar"]:.2f} | {100 * s["best"]["war"]:.2f} | {s["best"]["epoch"]} |')
    mean = {f'{w}_{m}': sum(s[w][m] for s in results.values()) / len(results) for w in ('last', 'best') for m in ('uar', 'war')}
    rows.append(f'| mean | {100 * mean["last_uar"]:.2f} | {100 * mean["last_war"]:.2f} | '
                f'{100 * mean["best_uar"]:.2f} | {100 * mean["best_war"]:.2f} | |')
    return '\n'.join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    return run_cli(lambda: _main(_parse_args(argv)))


def _main(args: argparse.Namespace) -> int:
    info = init_distributed(args.device)
    if args.deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    folds = _folds(args)
    if info.is_main:
        check_output_dir(args.output, '--output')
    with output_lock(args.output) if info.is_main else nullcontext():
        return _train_folds(args, info, folds)


def _train_folds(args: argparse.Namespace, info: DistInfo, folds: List[Optional[int]]) -> int:
    if info.is_main:
        atomic_write_json(os.path.join(args.output, 'args.json'),
                          {k: v for k, v in vars(args).items() if k not in ('resume', 'output')})
    results = {fold: train_run(args, info, fold) for fold in folds}
    if info.is_main and folds != [None]:
        table = folds_table(results)
        with open(os.path.join(args.output, 'folds.md'), 'w', encoding='utf-8') as f:
            f.write(table + '\n\n' + OPTIMISM_NOTE + '\n')
        atomic_write_json(os.path.join(args.output, 'folds.json'), {str(k): v for k, v in results.items()})
        print(table)
        print(OPTIMISM_NOTE)
    if info.enabled:
        dist.destroy_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
