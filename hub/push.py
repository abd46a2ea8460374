#!/usr/bin/env python3
"""Publish a verified export folder to the Hugging Face Hub.

Runs hub/verify.py's checks first and refuses a folder that fails them. Without --yes this is a dry run that
lists exactly what would be uploaded. With --yes it creates the repo if needed (HfApi.create_repo(exist_ok=True)),
uploads the folder (HfApi.upload_folder) with the token from the environment (HF_TOKEN or `hf auth login`) and
prints the commit URL.
"""
import argparse
import sys


def main(argv=None, api=None) -> int:
    from timm.utils import ParseKwargs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', help='folder written by hub/export.py')
    parser.add_argument('--repo-id', required=True, help='ORG/NAME, e.g. logoformer-timm/logoformer_base.dfew_fold1')
    parser.add_argument('--checkpoint', required=True, help='the training checkpoint the folder was exported from')
    parser.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: the --model-kwargs it was exported with')
    parser.add_argument('--yes', action='store_true', help='really upload (default: dry run)')
    parser.add_argument('--dry-run', action='store_true', help='only list what would be uploaded (the default)')
    parser.add_argument('--private', action='store_true', help='create the repo as private')
    args = parser.parse_args(argv)
    if args.yes and args.dry_run:
        parser.error('--yes and --dry-run contradict each other; pass one')

    import logoformer_timm  # noqa: F401  (registers the models)
    from logoformer_timm.cli import run_cli
    from logoformer_timm.hub import push_folder

    def run():
        result = push_folder(
            args.folder, args.repo_id, args.checkpoint, dry_run=not args.yes, private=args.private, api=api,
            model_kwargs=args.model_kwargs)
        print('verified: ' + ', '.join(f'{route} identical' for route in result['verified']))
        print(f"{'would upload' if result['commit_url'] is None else 'uploaded'} to {result['repo_id']}:")
        for name, size in result['files']:
            print(f'  {name}  {size} bytes')
        print(f"sha256(model.safetensors) = {result['sha256']}")
        if result['commit_url'] is None:
            print('dry run: nothing uploaded; pass --yes to upload')
        else:
            print(f"commit: {result['commit_url']}")

    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
