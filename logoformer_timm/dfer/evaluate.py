"""``logoformer-eval``: evaluate a clip model on an annotation list by its test-time protocol.

    logoformer-eval --checkpoint runs/dfew/fold_1/best --data-root DFEW --list lists/dfew/set_1/test.txt \\
        --output runs/dfew/fold_1/eval

The model's pretrained cfg names its protocol (``test_protocol``; :mod:`logoformer_timm.data.protocol`): a zoo
tag's is its authors' evaluation (frames, views, PIL resize, normalisation, how views merge), LOGO-Former's is this
project's. ``--protocol``, ``--num-segments``, ``--frames-per-segment``, ``--num-clips`` and ``--img-size`` change
it; ``metrics.json`` then names the protocol used and says it is not the authors'. A protocol is the authors'
only for the models it belongs to: another model's protocol (``--protocol mae_dfer_dfew`` for Former-DFER) is
recorded as not the authors', with a note. Lists are this project's, or the authors' split files as distributed
(``--path-prefix OLD=NEW`` maps their absolute paths; S2D's CSV files name folders relative to
``--data-root``, its scripts' ``DATA_PATH``). Writes ``OUTPUT/metrics.json`` (UAR, WAR and per-class
recall as fractions, confusion matrix, number of clips, protocol, precision) and ``OUTPUT/predictions.jsonl`` (per
clip, in list order: path, label, prediction, merged probabilities), as a pair
(:mod:`~logoformer_timm.dfer.eval_files`), and prints a table in percent. Runs under ``torchrun`` too (the
confusion matrix is summed over ranks; every clip is counted once).
"""
import argparse
import dataclasses
import json
import os
import sys
from contextlib import nullcontext
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from ..cli import (
    ArgumentParser, UsageError, add_extra_weight_args, check_output_dir, extra_weight_files, log_to_stderr,
    non_negative_int, positive_int, run_cli, progress as progress_bar)
from ..data import TEST_PROTOCOLS, TestProtocol, merge_views, resolve_video_data_config
from ..layers import check_finite_pixels
from ..weights.inference import PRECISIONS, precision_of, prepare_for_inference
from ..weights.loading import check_checkpoint_path, create_model, declared_num_classes, label_names
from .datasets import build_dataset, collate_clips, default_num_workers, parse_path_prefix, read_annotation_list
from .distributed import DistInfo, ShardSampler, all_reduce_sum, init_distributed
from .eval_files import write_result_pair
from .metrics import confusion_matrix, summarize

__all__ = ['evaluate', 'format_metrics_table', 'main']


@torch.no_grad()
def evaluate(
        model: nn.Module,
        loader: DataLoader,
        num_classes: int,
        info: DistInfo = DistInfo(),
        amp_dtype: Optional[torch.dtype] = None,
        progress: bool = False,
        merge: str = 'logit_mean',
        probabilities: Optional[Dict[int, List[float]]] = None,
) -> Dict[str, Any]:
    """Confusion matrix (summed over ranks), mean loss and skipped-clip count of a loader.

    Clips come in the model's layout (``build_dataset`` makes them so); items ``(B, V, ...)`` (several views per
    clip) are classified by their views' logits merged by ``merge`` (``'logit_mean'``: mean logits, then softmax;
    ``'softmax_mean'``: mean of the views' probabilities). The loss is the negative log of the merged probability
    of the label. Where the batches carry the clips' dataset indices (a test protocol's dataset),
    ``probabilities`` (when given) receives each clip's merged probabilities by index, from every rank.
    """
    model.eval()
    device = info.device
    preds, targets, merged = [], [], {}
    loss_sum = torch.zeros((), dtype=torch.float64)
    skipped = 0
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    for clips, labels, num_skipped, *indices in progress_bar(loader, 'eval', enabled=progress and info.is_main):
        skipped += num_skipped
        if not len(labels):
            continue
        check_finite_pixels(clips)
        views = clips.shape[1] if clips.ndim == 6 else 1
        clips = clips.flatten(0, 1) if clips.ndim == 6 else clips
        unique, where = _unique_views(clips, views)  # a short clip's temporal views are often the same frames
        with autocast:
            logits = model(unique.to(device, non_blocking=True)).float().cpu()[where]
        probs = merge_views(logits.reshape(len(labels), views, -1), merge)
        loss_sum -= probs.gather(1, labels[:, None]).clamp_min(1e-300).log().sum()
        preds.append(probs.argmax(dim=1))
        targets.append(labels)
        if indices:
            merged.update(zip(indices[0].tolist(), probs.tolist()))
    cm = confusion_matrix(torch.cat(preds) if preds else torch.empty(0), torch.cat(targets) if targets else torch.empty(0),
                          num_classes)
    cm = all_reduce_sum(cm.to(device), info).cpu()
    totals = all_reduce_sum(torch.tensor([loss_sum.item(), float(skipped)], dtype=torch.float64, device=device), info)
    if probabilities is not None:
        if info.enabled:
            gathered = [None] * info.world_size
            dist.all_gather_object(gathered, merged)
            for part in gathered:
                probabilities.update(part)
        else:
            probabilities.update(merged)
    out = summarize(cm)
    out['loss'] = float(totals[0] / max(out['num_clips'], 1))
    out['skipped_clips'] = int(totals[1])
    return out


def _unique_views(clips: torch.Tensor, views: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The distinct clips of ``(B * V, ...)`` views (each clip's views compared with each other) and, per view, the
    position of its clip among them: the model runs once per distinct view, every view keeps its logits."""
    keep, where = [], []
    for i in range(len(clips)):
        first = i - i % views
        same = next((where[j] for j in range(first, i) if torch.equal(clips[j], clips[i])), None)
        if same is None:
            keep.append(i)
            same = len(keep) - 1
        where.append(same)
    return clips[keep], torch.tensor(where)


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
    parser.add_argument('--checkpoint-entry', metavar='NAME',
                        help="the entry of a training checkpoint to load, e.g. model_ema (default: the model entry, "
                             "'model' / 'state_dict', as its authors' evaluation loads it)")
    add_extra_weight_args(parser)
    parser.add_argument('--data-root', default='',
                        help="root the list paths are relative to (for S2D's split files: its scripts' DATA_PATH)")
    parser.add_argument('--list', required=True,
                        help='annotation list: "<frame_dir> <num_frames> <label>" or "<frame_dir> <label>" per line, '
                             'or a CSV file with a header (video_name,label / path,id / video_name,labels) and '
                             '"<frame_dir>,<label>" rows (the authors\' split files as distributed)')
    parser.add_argument('--path-prefix', metavar='OLD=NEW', type=parse_path_prefix,
                        help='list paths that start with OLD start with NEW instead (the authors\' absolute paths)')
    parser.add_argument('--output', required=True, help='folder for metrics.json and predictions.jsonl')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing OUTPUT/metrics.json and predictions.jsonl')
    parser.add_argument('--protocol', choices=sorted(TEST_PROTOCOLS),
                        help="test-time protocol (default: the model's, its pretrained cfg's test_protocol)")
    parser.add_argument('--num-segments', type=positive_int, help="change the protocol's segments")
    parser.add_argument('--frames-per-segment', type=positive_int, help="change the protocol's frames per segment")
    parser.add_argument('--img-size', type=positive_int, help="change the protocol's resolution (default: the model's)")
    parser.add_argument('--num-clips', type=positive_int, help="change the protocol's temporal views")
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
        check_output_dir(args.output, '--output', results=('metrics.json', 'predictions.jsonl'), overwrite=args.overwrite)
    if args.checkpoint:
        check_checkpoint_path(args.checkpoint)
    # a missing list, and (unless skipped) a bad line, label or frame of it, fail now, before the weights are read
    num_classes = args.num_classes or declared_num_classes(args.model, args.checkpoint, args.pretrained)
    listed = read_annotation_list(args.list, args.data_root, num_classes, args.skip_bad_clips, args.path_prefix,
                                  check_frames=True)
    load = dict(num_classes=args.num_classes, img_size=args.img_size, checkpoint_entry=args.checkpoint_entry,
                extra_files=extra_weight_files(args))
    model = create_model(args.model, args.checkpoint, args.pretrained, **load)
    protocol = test_protocol_of(model, args)
    if (protocol.num_frames, protocol.size) != (model.num_frames, tuple(model.img_size)):  # the changed clip's model
        model = create_model(args.model, args.checkpoint, args.pretrained, **dict(
            load, num_frames=protocol.num_frames, img_size=protocol.size[0] if protocol.size[0] == protocol.size[1]
            else protocol.size))
    model = model.to(info.device)
    dataset = build_dataset(
        model, args.list, args.data_root, train=False, num_segments=protocol.num_segments,
        frames_per_segment=protocol.frames_per_segment, skip_bad_clips=args.skip_bad_clips, protocol=protocol,
        path_prefix=args.path_prefix, listed=listed if num_classes else None)  # a .pth file's classes: known now
    loader = DataLoader(
        dataset, batch_size=args.batch_size, sampler=ShardSampler(len(dataset), info.rank, info.world_size),
        num_workers=args.workers, collate_fn=collate_clips, pin_memory=info.device.type == 'cuda')
    precision = args.precision or (('bf16' if info.device.type == 'cpu' else 'fp16') if args.amp else 'fp32')
    runner = prepare_for_inference(model, precision, args.compile)
    probabilities: Dict[int, List[float]] = {}
    metrics = evaluate(runner, loader, model.num_classes, info, progress=True, merge=protocol.merge,
                       probabilities=probabilities)
    metrics['skipped_clips'] += len(dataset.problems)
    result = metrics_record(metrics, model, args, protocol, precision_of(runner))
    if info.is_main:
        write_result_pair(args.output, result, prediction_lines(dataset.records, probabilities))
        print(format_metrics_table(metrics, list(result['per_class'])))
        note = f'; {result["protocol_note"]}' if 'protocol_note' in result else ''
        name = protocol.name.partition(' with ')[0] if note else protocol.name  # the note names the changes
        print(f'metrics written to {os.path.join(args.output, "metrics.json")} (protocol {name}{note}), '
              f'predictions to {os.path.join(args.output, "predictions.jsonl")}')
    if info.enabled:
        dist.destroy_process_group()
    return 0


def test_protocol_of(model: nn.Module, args: argparse.Namespace) -> TestProtocol:
    """The protocol of ``model``'s cfg (or ``--protocol``), changed by the command's flags."""
    config = resolve_video_data_config(model)
    protocol = TEST_PROTOCOLS[args.protocol] if args.protocol else config['test_protocol']
    if _foreign_protocol(model, args):  # its authors' for their models, not for this one
        protocol = dataclasses.replace(protocol, authors=False)
    if protocol is None:
        protocol = TEST_PROTOCOLS['logoformer'].fit_clip(model.num_frames, tuple(model.img_size)).replace(
            mean=config['mean'], std=config['std'])
    if protocol.sampler != 'segments' and (args.num_segments or args.frames_per_segment):
        raise UsageError(
            f'--num-segments / --frames-per-segment change a segment sampler, but protocol {protocol.name} takes every '
            f'{protocol.stride}th frame; use --num-clips for its temporal views or --protocol for another protocol.')
    size = None if args.img_size is None else (args.img_size, args.img_size)
    return protocol.replace(num_segments=args.num_segments, frames_per_segment=args.frames_per_segment,
                            temporal_views=args.num_clips, size=size)


def _foreign_protocol(model: nn.Module, args: argparse.Namespace) -> bool:
    """Whether ``--protocol`` names another protocol than ``model``'s own (its cfg's ``test_protocol``; LOGO-Former's:
    this project's)."""
    own = resolve_video_data_config(model)['test_protocol'] or TEST_PROTOCOLS['logoformer']
    return args.protocol is not None and TEST_PROTOCOLS[args.protocol] != own


def _protocol_note(model: nn.Module, args: argparse.Namespace, protocol: TestProtocol) -> str:
    """Why ``protocol`` is not the authors': another model's, this project's, or changed."""
    base, _, changed = protocol.name.partition(' with ')
    changes = f', changed: {changed}' if changed else ''
    if _foreign_protocol(model, args):
        own = resolve_video_data_config(model)['test_protocol']
        return (f"protocol {base} belongs to {protocol.source.split(' (')[0]}'s models, not to "
                f"{model.pretrained_cfg.get('architecture')} (its own: {own.name if own else 'logoformer'}){changes}: "
                f"figures are not comparable with the ones its authors report")
    if base == 'logoformer':
        return f"this project's protocol for LOGO-Former{changes}"
    return f"not the authors' protocol ({base} changed: {changed}): figures are not comparable with the ones they report"


def prediction_lines(records: Sequence[Any], probabilities: Dict[int, List[float]]) -> List[str]:
    """The lines of ``predictions.jsonl``: one per clip of the list, in list order (a skipped clip's pred and probs
    are null)."""
    lines = []
    for index, record in enumerate(records):
        probs = probabilities.get(index)
        pred = None if probs is None else max(range(len(probs)), key=probs.__getitem__)
        lines.append(json.dumps(dict(path=record.name, label=record.label, pred=pred, probs=probs)))
    return lines


def metrics_record(
        metrics: Dict[str, Any], model: nn.Module, args: argparse.Namespace, protocol: TestProtocol,
        precision: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The metrics.json content, in the schema of ``logoformer_timm/weights/card.py`` (fractions, label -> recall)."""
    names = label_names(model)
    record = dict(
        unit='fraction',  # uar, war and per_class; the printed table shows percent
        uar=metrics['uar'],
        war=metrics['war'],
        per_class=dict(zip(names, metrics['per_class'])),
        confusion_matrix=metrics['confusion_matrix'],
        num_clips=metrics['num_clips'],
        protocol=f'{protocol.describe()}; list {os.path.basename(args.list)}',
        test_protocol=protocol.to_dict(),
        authors_protocol=protocol.authors,
    )
    if not protocol.authors:
        record['protocol_note'] = _protocol_note(model, args, protocol)
    if args.dataset:
        record['dataset'] = args.dataset
    if args.fold is not None:
        record['fold'] = args.fold
    record['skipped_clips'] = metrics['skipped_clips']
    record['checkpoint'] = args.checkpoint or (f'{args.model} (pretrained)' if args.pretrained else args.model)
    record.update(precision or {})
    return record


if __name__ == '__main__':
    sys.exit(main())
