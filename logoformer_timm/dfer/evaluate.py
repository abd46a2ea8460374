"""``logoformer-eval``: evaluate a LOGO-Former on an annotation list with the DFER test protocol.

    logoformer-eval --checkpoint runs/dfew/fold_1/best --data-root DFEW --list lists/dfew/set_1/test.txt \\
        --output runs/dfew/fold_1/eval

Deterministic sampling (8 segments x 2 frames, the protocol's test rule), bilinear resize, optional test-time
averaging over ``--num-clips`` evenly shifted clips. Writes ``OUTPUT/metrics.json`` (UAR, WAR, per-class recall,
confusion matrix, number of clips, protocol) and prints a table. Runs under ``torchrun`` too (the confusion
matrix is summed over ranks; every clip is counted once).
"""
import argparse
import os
import sys
from contextlib import nullcontext
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from ..cli import (
    ArgumentParser, UsageError, check_output_dir, log_to_stderr, non_negative_int, positive_int, run_cli,
    progress as progress_bar)
from ..data import resolve_video_data_config
from ..layers import check_finite_pixels
from ..weights.inference import PRECISIONS, prepare_for_inference
from ..weights.loading import create_model, label_names
from .datasets import build_dataset, collate_clips, default_num_workers, read_list_lines
from .distributed import DistInfo, ShardSampler, all_reduce_sum, init_distributed
from .metrics import confusion_matrix, summarize
from .run_folder import atomic_write_json

__all__ = ['evaluate', 'format_metrics_table', 'main']


@torch.no_grad()
def evaluate(
        model: nn.Module,
        loader: DataLoader,
        num_classes: int,
        info: DistInfo = DistInfo(),
        amp_dtype: Optional[torch.dtype] = None,
        progress: bool = False,
) -> Dict[str, Any]:
    """Confusion matrix (summed over ranks), mean cross-entropy and skipped-clip count of a loader.

    Clips come in the model's layout (``build_dataset`` makes them so); items ``(B, V, ...)`` (several views per
    clip) are classified by the mean of the views' logits.
    """
    model.eval()
    device = info.device
    preds, targets = [], []
    loss_sum = torch.zeros((), dtype=torch.float64)
    skipped = 0
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    for clips, labels, num_skipped in progress_bar(loader, 'eval', enabled=progress and info.is_main):
        skipped += num_skipped
        if not len(labels):
            continue
        clips, labels = clips.to(device, non_blocking=True), labels.to(device)
        check_finite_pixels(clips)
        views = clips.shape[1] if clips.ndim == 6 else 0
        with autocast:
            if views:
                logits = model(clips.flatten(0, 1)).float()
                logits = logits.reshape(len(labels), views, -1).mean(dim=1)
            else:
                logits = model(clips).float()
        loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction='sum').double().cpu()
        preds.append(logits.argmax(dim=1).cpu())
        targets.append(labels.cpu())
    cm = confusion_matrix(torch.cat(preds) if preds else torch.empty(0), torch.cat(targets) if targets else torch.empty(0),
                          num_classes)
    cm = all_reduce_sum(cm.to(device), info).cpu()
    totals = all_reduce_sum(torch.tensor([loss_sum.item(), float(skipped)], dtype=torch.float64, device=device), info)
    out = summarize(cm)
    out['loss'] = float(totals[0] / max(out['num_clips'], 1))
    out['skipped_clips'] = int(totals[1])
    return out


def format_metrics_table(metrics: Dict[str, Any], label_names: Sequence[str]) -> str:
    """A plain-text table of per-class recall, UAR and WAR in percent."""
    rows = [f'{"class":<12} {"recall %":>9} {"clips":>6}']
    for i, recall in enumerate(metrics['per_class']):
        name = label_names[i] if i < len(label_names) else str(i)
        count = sum(metrics['confusion_matrix'][i])
        rows.append(f'{name:<12} {"-" if recall is None else f"{100 * recall:.2f}":>9} {count:>6}')
    rows.append(f'{"UAR":<12} {100 * metrics["uar"]:>9.2f}')
    rows.append(f'{"WAR":<12} {100 * metrics["war"]:>9.2f} {metrics["num_clips"]:>6}')
    return '\n'.join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog='logoformer-eval', description=__doc__.split('\n')[0])
    parser.add_argument('--model', help='model name, e.g. logoformer_small (not needed for a folder with config.json)')
    parser.add_argument('--checkpoint', help='weights: a .safetensors file, a training checkpoint folder or a hub/ folder')
    parser.add_argument('--pretrained', action='store_true', help='load the published weights of --model (NAME.TAG)')
    parser.add_argument('--num-classes', type=positive_int, help='classes of the checkpoint when it is a bare weights file')
    parser.add_argument('--data-root', default='', help='root the list paths are relative to')
    parser.add_argument('--list', required=True, help='annotation list: "<frame_dir> <num_frames> <label>" per line')
    parser.add_argument('--output', required=True, help='folder for metrics.json')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUTPUT/metrics.json')
    parser.add_argument('--num-segments', type=positive_int, default=8)
    parser.add_argument('--frames-per-segment', type=positive_int, default=2)
    parser.add_argument('--img-size', type=positive_int, help='resolution (default: the model\'s)')
    parser.add_argument('--num-clips', type=positive_int, default=1, help='test-time averaging over evenly shifted clips')
    parser.add_argument('--batch-size', type=positive_int, default=32)
    parser.add_argument('--workers', type=non_negative_int, default=default_num_workers(),
                        help='DataLoader worker processes (default: min(4, CPU count))')
    parser.add_argument('--device', help='cpu, cuda, cuda:1 (default: cuda if available)')
    parser.add_argument('--amp', action='store_true', help='short for --precision bf16 on CPU, fp16 on GPU')
    parser.add_argument('--precision', choices=PRECISIONS, default=None,
                        help='fp32; bf16: weights cast to bfloat16 (measured faster than bf16 autocast, as exact); '
                             'fp16: autocast (needs a GPU or an AMX-FP16 CPU) (default: fp32)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model (the first batch compiles: tens of seconds on CPU)')
    parser.add_argument('--skip-bad-clips', action='store_true', help='warn about and count bad clips instead of failing')
    parser.add_argument('--dataset', help='dataset name recorded in metrics.json, e.g. DFEW')
    parser.add_argument('--fold', type=int, help='fold recorded in metrics.json')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    log_to_stderr()
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if not args.checkpoint and not args.pretrained:
        raise UsageError('pass --checkpoint PATH or --pretrained: evaluating an untrained model measures nothing.')
    if args.amp and args.precision is not None:
        raise UsageError('--amp is short for --precision bf16 (CPU) or fp16 (GPU): give one of them, not both.')
    info = init_distributed(args.device)
    if info.is_main:  # a read-only or impossible --output fails now, not after the evaluation
        check_output_dir(args.output, '--output', results=('metrics.json',), overwrite=args.overwrite)
    read_list_lines(args.list)  # a missing or unreadable list fails before the model is built
    num_frames = args.num_segments * args.frames_per_segment
    model = create_model(
        args.model, args.checkpoint, args.pretrained, num_classes=args.num_classes, num_frames=num_frames,
        img_size=args.img_size).to(info.device)
    dataset = build_dataset(
        model, args.list, args.data_root, train=False, num_segments=args.num_segments,
        frames_per_segment=args.frames_per_segment, num_views=args.num_clips, skip_bad_clips=args.skip_bad_clips)
    loader = DataLoader(
        dataset, batch_size=args.batch_size, sampler=ShardSampler(len(dataset), info.rank, info.world_size),
        num_workers=args.workers, collate_fn=collate_clips, pin_memory=info.device.type == 'cuda')
    precision = args.precision or (('bf16' if info.device.type == 'cpu' else 'fp16') if args.amp else 'fp32')
    runner = prepare_for_inference(model, precision, args.compile)
    metrics = evaluate(runner, loader, model.num_classes, info, progress=True)
    metrics['skipped_clips'] += len(dataset.problems)
    result = metrics_record(metrics, model, args)
    if info.is_main:
        os.makedirs(args.output, exist_ok=True)
        atomic_write_json(os.path.join(args.output, 'metrics.json'), result)
        print(format_metrics_table(metrics, list(result['per_class'])))
        print(f'metrics written to {os.path.join(args.output, "metrics.json")}')
    if info.enabled:
        dist.destroy_process_group()
    return 0


def metrics_record(metrics: Dict[str, Any], model: nn.Module, args: argparse.Namespace) -> Dict[str, Any]:
    """The metrics.json content, in the schema of ``logoformer_timm/weights/card.py`` (fractions, label -> recall)."""
    cfg = resolve_video_data_config(model)
    names = label_names(model)
    height, width = cfg['input_size'][2:]
    resize = f'{cfg["interpolation"]} resize to {height}x{width}'
    if cfg['crop_pct'] != 1 or cfg['crop_mode'] != 'squash':
        resize = (f'{cfg["interpolation"]} resize ({cfg["crop_mode"]}) to 1/{cfg["crop_pct"]} of {height}x{width}, '
                  f'centre crop {height}x{width}')
    pixels = 'pixels / 255'
    if any(m != 0 for m in cfg['mean']) or any(s != 1 for s in cfg['std']):
        pixels += f', mean {list(cfg["mean"])}, std {list(cfg["std"])}'
    record = dict(
        uar=metrics['uar'],
        war=metrics['war'],
        per_class=dict(zip(names, metrics['per_class'])),
        confusion_matrix=metrics['confusion_matrix'],
        num_clips=metrics['num_clips'],
        protocol=(f'DFER test protocol: {args.num_segments} segments x {args.frames_per_segment} consecutive frames '
                  f'at deterministic segment centres, {args.num_clips} clip(s) per video averaged, {resize}, '
                  f'{pixels}; list {os.path.basename(args.list)}'),
    )
    if args.dataset:
        record['dataset'] = args.dataset
    if args.fold is not None:
        record['fold'] = args.fold
    record['skipped_clips'] = metrics['skipped_clips']
    record['checkpoint'] = args.checkpoint or (f'{args.model} (pretrained)' if args.pretrained else args.model)
    return record


if __name__ == '__main__':
    sys.exit(main())
