#!/usr/bin/env python3
"""Check an exported Hub repo folder before publishing it.

Reloads the folder through timm's local-dir: route and through hf-hub: from a seeded offline cache, and checks
that both give logits identical to the source checkpoint on a fixed clip. Exits non-zero on any difference.
"""
import argparse
import sys


def main(argv=None) -> int:
    from timm.utils import ParseKwargs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', help='folder written by hub/export.py')
    parser.add_argument('--checkpoint', required=True, help='the training checkpoint the folder was exported from')
    parser.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: the --model-kwargs it was exported with')
    args = parser.parse_args(argv)

    import logoformer_timm  # noqa: F401  (registers the models)
    from logoformer_timm.cli import run_cli
    from logoformer_timm.hub import verify_folder

    def run():
        for route, diff in verify_folder(args.folder, args.checkpoint, args.model_kwargs).items():
            print(f'{route}: logits identical to {args.checkpoint} (max |diff| {diff})')
        print(f'OK: {args.folder} is ready to push')

    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
