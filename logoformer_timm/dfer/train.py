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
import os
import sys
from contextlib import nullcontext
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from ..cli import ArgumentParser, check_output_dir, log_to_stderr, non_negative_int, positive_int, run_cli
from .datasets import default_num_workers, read_list_lines
from .distributed import DistInfo, init_distributed
from .loss import LOSSES
from .run_folder import atomic_write_json, output_lock, read_log, remove_run, rewrite_log
from .trainer import OPTIMISM_NOTE, Trainer

__all__ = ['main', 'build_parser', 'train_run']


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
    g.add_argument('--checkpoint-entry', metavar='NAME',
                   help="the entry of a training checkpoint file to start from, e.g. model_ema (default: the model "
                        "entry, 'model' / 'state_dict')")
    g.add_argument('--num-classes', type=positive_int, default=7, help='classes of the label set (a new head if it differs)')
    g.add_argument('--stem-weights', help='ResNet-18 weights for the stem: timm name or local file')
    g.add_argument('--img-size', type=positive_int, help="resolution (default: the model's, 112 for LOGO-Former)")
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
    g.add_argument('--overwrite', action='store_true',
                   help='train into an --output that is not empty: the earlier run there (log, summaries, checkpoints, '
                        'fold runs) is deleted first')
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--deterministic', action='store_true', help='deterministic algorithms only (slower on GPU)')
    g.add_argument('--device', help='cpu, cuda, cuda:1 (default: cuda if available)')
    return p


# ---------------------------------------------------------------------------------------------- entry point

def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        saved = os.path.join(args.resume, 'args.json')
        if not os.path.isdir(args.resume):
            raise FileNotFoundError(f'--resume {args.resume}: the folder does not exist; pass the --output of a run.')
        if not os.path.isfile(saved):
            raise FileNotFoundError(f'--resume {args.resume}: no args.json there; is it the --output of a run?')
        with open(saved, encoding='utf-8') as f:
            parser.set_defaults(**json.load(f))
        args = parser.parse_args(argv)  # the saved arguments, overridden by the ones given now
        args.output, args.resume = args.resume, args.resume
    if args.resume and args.overwrite:
        raise ValueError('--resume continues the run in its folder and --overwrite deletes it: pass one.')
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


def _lists(args: argparse.Namespace, fold: Optional[int]) -> Tuple[str, str]:
    """The training and validation lists of ``fold``."""
    return tuple(s if fold is None else s.replace('{fold}', str(fold)) for s in (args.train_list, args.val_list))


def train_run(args: argparse.Namespace, info: DistInfo, fold: Optional[int] = None) -> Dict[str, Any]:
    """Train one run (one fold when ``fold`` is given); resumes when ``args.resume`` is set."""
    run_dir = args.output if fold is None else os.path.join(args.output, f'fold_{fold}')
    done = os.path.join(run_dir, 'summary.json')
    if args.resume and os.path.isfile(done):
        with open(done, encoding='utf-8') as f:
            summary = json.load(f)
        if summary['epochs'] == args.epochs:  # finished: its log is checked (and a torn line dropped) all the same
            history = read_log(run_dir, upto=summary['last']['epoch'])
            if info.is_main:
                rewrite_log(run_dir, history)
            return summary
    os.makedirs(run_dir, exist_ok=True)
    trainer = Trainer(args, run_dir, *_lists(args, fold), info)
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
    log_to_stderr()
    return run_cli(lambda: _main(_parse_args(argv)))


def _main(args: argparse.Namespace) -> int:
    info = init_distributed(args.device)
    if args.deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    folds = _folds(args)
    for fold in folds:  # a missing list fails before any model is built
        for listed in _lists(args, fold):
            read_list_lines(listed)
    if info.is_main:
        earlier_run = os.path.isfile(os.path.join(args.output, 'args.json'))
        check_output_dir(args.output, '--output', results=() if args.resume else None, overwrite=args.overwrite,
                         hint=f'--resume {args.output} to continue the run, ' if earlier_run else '')
    with output_lock(args.output) if info.is_main else nullcontext():
        if info.is_main and args.overwrite:
            remove_run(args.output)
        return _train_folds(args, info, folds)


def _train_folds(args: argparse.Namespace, info: DistInfo, folds: List[Optional[int]]) -> int:
    if info.is_main:
        atomic_write_json(os.path.join(args.output, 'args.json'),
                          {k: v for k, v in vars(args).items() if k not in ('resume', 'output', 'overwrite')})
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
