"""The command line ``logoformer-hub export|verify|push`` (also ``python -m logoformer_timm.weights.hub``; the
repository's ``hub/export.py``, ``hub/verify.py`` and ``hub/push.py`` are the same subcommands), over
:func:`.publish.export_folder`, :func:`.verify.verify_folder` and :func:`.verify.push_folder`.
"""
import argparse
import sys
from typing import Any, Optional, Sequence

from ..cli import ArgumentParser, add_extra_weight_args, extra_weight_files, run_cli
from .publish import export_folder
from .verify import push_folder, verify_folder

__all__ = ['build_parser', 'main']


_EXPORT_DOC = """Turn a training checkpoint or a zoo model's file into a ready-to-upload Hugging Face Hub repo folder.

The checkpoint is a LOGO-Former training run's, or the file of a zoo model (Former-DFER, MAE-DFER, DFER-CLIP, S2D
with its --landmark-checkpoint) as its authors published it, with --model NAME.TAG.

Writes model.safetensors, config.json (timm's format) and a README.md model card, then prints the sha256 of
model.safetensors and the entry to add to logoformer_timm/weights/manifest.py. Frames, resolution, input channels and
classes are read from the weights, the rest of the architecture from the checkpoint folder's config.json (or
--model-kwargs for a bare weights file); the metrics table of the card comes only from --metrics."""
_VERIFY_DOC = """Check an exported Hub repo folder before publishing it.

Checks that every tensor of model.safetensors is bitwise the source checkpoint's (after its key mapping), then
reloads the folder through timm's local-dir: route and through hf-hub: from a seeded offline cache, and checks
that both give logits identical to the source checkpoint on a fixed clip. Exits non-zero on any difference."""
_PUSH_DOC = """Publish a verified export folder to the Hugging Face Hub.

Runs the verify checks first and refuses a folder that fails them. Without --yes this is a dry run that lists
exactly what would be uploaded. With --yes it creates the repo if needed (HfApi.create_repo(exist_ok=True)),
uploads the folder (HfApi.upload_folder) with the token from the environment (HF_TOKEN or `hf auth login`) and
prints the commit URL."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``logoformer-hub`` (``python -m logoformer_timm.weights.hub``, ``hub/*.py``)."""
    from timm.utils import ParseKwargs

    parser = ArgumentParser(
        prog='logoformer-hub', description='Export, verify and publish the weights of LOGO-Former and of the DFER zoo (Former-DFER, '
                    'MAE-DFER, DFER-CLIP, S2D) as Hugging Face Hub repo folders.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='{export,verify,push}')
    raw = argparse.RawDescriptionHelpFormatter

    export = commands.add_parser('export', help=_EXPORT_DOC.split('\n')[0], description=_EXPORT_DOC,
                                 formatter_class=raw)
    export.add_argument('--model',
                        help='architecture the checkpoint was trained as, e.g. logoformer_base, or a zoo tag such as '
                             "former_dfer.dfew_fold1 (default: the one a checkpoint folder's config.json names; a "
                             'weights file needs it)')
    export.add_argument('--checkpoint', required=True,
                        help="a training run's checkpoint folder (runs/NAME/last or best), or a weights file: "
                             '.safetensors, or a torch file (loaded weights-only) together with --model-kwargs')
    export.add_argument('--out', required=True, help='new (or empty) folder to write the repo into; missing parent folders are made')
    export.add_argument('--tag', help='pretrained tag, e.g. dfew_fold1; the repo becomes logoformer-timm/<model>.<tag>')
    export.add_argument('--metrics', help='metrics.json written by logoformer-eval (schema in logoformer_timm/weights/card.py)')
    export.add_argument('--dtype', default='float32', choices=('float32', 'float16'), help='stored weight dtype')
    export.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: every model argument it was trained with that the weights do '
                             'not fix, e.g. local_window="(2, 4, 4)" num_heads=8 (no values: the defaults)')
    export.add_argument('--train-dataset', help='dataset the weights were trained on, e.g. DFEW (stated on the card)')
    export.add_argument('--recipe', help='how the weights were trained: command line or URL (card and manifest)')
    export.add_argument('--license', default='mit', help='license of the weights (default: mit)')

    verify = commands.add_parser('verify', help=_VERIFY_DOC.split('\n')[0], description=_VERIFY_DOC,
                                 formatter_class=raw)
    verify.add_argument('folder', help='folder written by logoformer-hub export')
    verify.add_argument('--checkpoint', required=True, help='the training checkpoint the folder was exported from')
    verify.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: the --model-kwargs it was exported with')

    push = commands.add_parser('push', help=_PUSH_DOC.split('\n')[0], description=_PUSH_DOC, formatter_class=raw)
    push.add_argument('folder', help='folder written by logoformer-hub export')
    push.add_argument('--repo-id', required=True, help='ORG/NAME, e.g. logoformer-timm/logoformer_base.dfew_fold1')
    push.add_argument('--checkpoint', required=True, help='the training checkpoint the folder was exported from')
    push.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: the --model-kwargs it was exported with')
    for command in (export, verify, push):
        add_extra_weight_args(command)
        command.add_argument(
            '--checkpoint-entry', metavar='NAME',
            help="the entry of a training checkpoint file to take, e.g. model_ema (default: the model entry, 'model' "
                 "/ 'state_dict', as its authors' evaluation loads it)")
    push.add_argument('--yes', action='store_true', help='really upload (default: dry run)')
    push.add_argument('--dry-run', action='store_true', help='only list what would be uploaded (the default)')
    push.add_argument('--private', action='store_true', help='create the repo as private')
    return parser


def _export(args: argparse.Namespace, api: Any) -> None:
    result = export_folder(
        args.model, args.checkpoint, args.out, tag=args.tag, metrics=args.metrics, dtype=args.dtype,
        model_kwargs=args.model_kwargs, train_dataset=args.train_dataset, recipe=args.recipe, license=args.license,
        checkpoint_entry=args.checkpoint_entry, extra_files=extra_weight_files(args))
    print(f'wrote {result.folder}: ' + ', '.join(sorted(p.name for p in result.folder.iterdir())))
    print(f'sha256(model.safetensors) = {result.sha256}')
    if result.hf_hub_id:
        print(f'Hub repo: {result.hf_hub_id}')
    print(result.manifest_note)
    if result.manifest_entry:
        print(result.manifest_entry)


def _verify(args: argparse.Namespace, api: Any) -> None:
    routes = verify_folder(args.folder, args.checkpoint, args.model_kwargs, args.checkpoint_entry,
                           extra_weight_files(args))
    print(f'model.safetensors: every tensor bitwise identical to {args.checkpoint} (after its key mapping)')
    for route, diff in routes.items():
        print(f'{route}: logits identical to {args.checkpoint} (max |diff| {diff})')
    print(f'OK: {args.folder} is ready to push')


def _push(args: argparse.Namespace, api: Any) -> None:
    result = push_folder(
        args.folder, args.repo_id, args.checkpoint, dry_run=not args.yes, private=args.private, api=api,
        model_kwargs=args.model_kwargs, checkpoint_entry=args.checkpoint_entry, extra_files=extra_weight_files(args))
    print('verified: ' + ', '.join(f'{route} identical' for route in result['verified']))
    print(f"{'would upload' if result['commit_url'] is None else 'uploaded'} to {result['repo_id']}:")
    for name, size in result['files']:
        print(f'  {name}  {size} bytes')
    print(f"sha256(model.safetensors) = {result['sha256']}")
    if result['commit_url'] is None:
        print('dry run: nothing uploaded; pass --yes to upload')
    else:
        print(f"commit: {result['commit_url']}")


def main(argv: Optional[Sequence[str]] = None, api: Any = None) -> int:
    """``logoformer-hub export|verify|push``; ``api`` replaces ``HfApi`` for push (tests). User errors exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == 'push' and args.yes and args.dry_run:
        parser.error('--yes and --dry-run contradict each other; pass one')
    command = dict(export=_export, verify=_verify, push=_push)[args.command]
    return run_cli(lambda: command(args, api))


if __name__ == '__main__':
    sys.exit(main())
