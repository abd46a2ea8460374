"""One training run of the DFER protocol: :class:`Trainer` builds the model, optimiser, scheduler, EMA and loaders
and runs the epochs; :class:`TrainStep` is the model and the loss in one module (for DDP). The command line is
``logoformer_timm/dfer/train.py``; what a checkpoint holds is ``run_folder.TrainingState``."""
import argparse
import logging
import math
import os
import time
from contextlib import nullcontext
from typing import Any, Dict, List, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..cli import progress
from ..layers import check_finite_pixels
from ..weights.loading import create_model, label_names
from .datasets import EpochIndices, build_dataset, collate_clips
from .distributed import DistInfo, ShardSampler, all_ranks_have_data, all_reduce_sum
from .evaluate import evaluate
from .loss import DferCriterion
from .run_folder import (
    TrainingState, append_log, atomic_write_json, last_checkpoint, read_log, recover_best, recover_last, rewrite_log)

__all__ = ['Trainer', 'TrainStep', 'OPTIMISM_NOTE']

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


class Trainer:
    """One training run (one fold): builds the model, optimiser, scheduler, EMA and loaders and runs the epochs;
    ``state`` (:class:`TrainingState`) is what its checkpoints save and a resumed run restores."""

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
            stem_weights=args.stem_weights, new_head=True, checkpoint_entry=getattr(args, 'checkpoint_entry', None),
            **args.model_kwargs).to(device)
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
        self.train_sampler = EpochIndices(DistributedSampler(
            self.train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=args.seed))
        # Workers live for the whole run (starting them costs more than a small epoch); the epoch reaches them
        # with each index. Each loader draws its worker seeds from a generator of its own: from the global RNG,
        # a loader's draws (one per epoch without persistent workers, one per run with them) would shift the
        # dropout and drop-path draws with --workers.
        loader_args = dict(num_workers=args.workers, persistent_workers=args.workers > 0, collate_fn=collate_clips,
                           pin_memory=device.type == 'cuda')
        self.train_loader = DataLoader(
            self.train_set, batch_size=micro_batch, sampler=self.train_sampler, drop_last=False,
            generator=torch.Generator(), **loader_args)
        self.val_loader = DataLoader(
            self.val_set, batch_size=micro_batch, sampler=ShardSampler(len(self.val_set), info.rank, info.world_size),
            generator=torch.Generator(), **loader_args)
        self.updates_per_epoch = math.ceil(len(self.train_loader) / args.grad_accum)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
            decay_rate=args.decay_rate, warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr, min_lr=args.min_lr,
            updates_per_epoch=self.updates_per_epoch)
        self.amp_dtype = (torch.bfloat16 if device.type == 'cpu' else torch.float16) if args.amp else None
        self.scaler = torch.amp.GradScaler('cuda') if args.amp and device.type == 'cuda' else None

        self.ddp = DistributedDataParallel(self.step_module, device_ids=[device] if device.type == 'cuda' else None) \
            if info.enabled else self.step_module
        self.state = TrainingState(self.model, self.criterion, self.optimizer, self.scheduler, self.ema, self.scaler)
        self.history: List[Dict[str, Any]] = []
        if args.resume:
            if info.is_main:
                recover_last(run_dir)
            if info.enabled:
                dist.barrier()
        last = last_checkpoint(run_dir) if args.resume else None
        if last:
            self.state.load(last)
            self.history = read_log(run_dir, upto=self.state.epoch)
            if info.is_main:
                _logger.info('resumed %s after epoch %d', run_dir, self.state.epoch)
                recover_best(run_dir, upto=self.state.epoch)
        else:  # dropout / drop-path draws differ per rank; a resumed run restored them above
            torch.manual_seed(args.seed + info.rank)

    # -- epochs
    def train_epoch(self, epoch: int) -> Dict[str, Any]:
        args, device, info = self.args, self.info.device, self.info
        self.step_module.train()
        self.train_sampler.set_epoch(epoch)
        totals = torch.zeros(6, dtype=torch.float64)  # loss, classification term, intra, inter (sums), correct, clips
        skipped = 0
        autocast = torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        batches = len(self.train_loader)
        self.optimizer.zero_grad(set_to_none=True)
        bar = progress(self.train_loader, f'epoch {epoch + 1}/{args.epochs}', enabled=info.is_main)
        for i, (clips, labels, num_skipped) in enumerate(bar):
            skipped += num_skipped
            if not all_ranks_have_data(len(labels), info):
                continue
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            check_finite_pixels(clips)
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
        self.state.num_updates += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.state.num_updates)
        self.scheduler.step_update(num_updates=self.state.num_updates)

    def run(self) -> Dict[str, Any]:
        """Train from the start (or resumed) epoch to ``--epochs``; return the run summary."""
        args, info, state = self.args, self.info, self.state
        if info.is_main:
            rewrite_log(self.run_dir, self.history)
        if state.epoch == 0:
            self.scheduler.step(0)
        for epoch in range(state.epoch, args.epochs):
            start = time.time()
            lr = self.optimizer.param_groups[0]['lr']
            record = dict(epoch=epoch + 1, lr=lr, **self.train_epoch(epoch))
            val = evaluate(state.eval_model, self.val_loader, args.num_classes, info, self.amp_dtype)
            val['skipped_clips'] += len(self.val_set.problems)
            record.update({f'val_{k}': v for k, v in val.items()})
            self.scheduler.step(epoch + 1, val['uar'])
            is_best = val['uar'] > state.best['uar']
            if is_best:
                state.best = dict(epoch=epoch + 1, uar=val['uar'], war=val['war'])
            record.update(best_epoch=state.best['epoch'], best_uar=state.best['uar'], time=round(time.time() - start, 3))
            self.history.append(record)
            state.epoch = epoch + 1
            if info.is_main:
                append_log(self.run_dir, record)
                state.save(self.run_dir, {f'val_{k}': v for k, v in val.items()}, is_best)
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
            best=dict(self.state.best),  # the epoch best/ holds
            epochs=self.args.epochs, note=OPTIMISM_NOTE, label_names=label_names(self.model),
            last_per_class=last['val_per_class'], last_confusion_matrix=last['val_confusion_matrix'])
        if self.info.is_main:
            atomic_write_json(os.path.join(self.run_dir, 'summary.json'), summary)
        return summary
