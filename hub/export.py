#!/usr/bin/env python3
"""Turn a LOGO-Former training checkpoint into a ready-to-upload Hugging Face Hub repo folder.

Writes model.safetensors, config.json (timm's format) and a README.md model card, then prints the sha256 of
model.safetensors and the entry to add to logoformer_timm/manifest.py. Frames, resolution, input channels and
classes are read from the weights, the rest of the architecture from the checkpoint folder's config.json (or
--model-kwargs for a bare weights file); the metrics table of the card comes only from --metrics.
"""
import argparse
import sys


def main(argv=None) -> int:
    from timm.utils import ParseKwargs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help='architecture the checkpoint was trained as, e.g. logoformer_base')
    parser.add_argument('--checkpoint', required=True,
                        help="a training run's checkpoint folder (runs/NAME/last or best), or a weights file: "
                             '.safetensors, or a torch file (loaded weights-only) together with --model-kwargs')
    parser.add_argument('--out', required=True, help='new (or empty) folder to write the repo into')
    parser.add_argument('--tag', help='pretrained tag, e.g. dfew_fold1; the repo becomes logoformer-timm/<model>.<tag>')
    parser.add_argument('--metrics', help="metrics.json written by logoformer-eval (schema in logoformer_timm/hub.py)")
    parser.add_argument('--dtype', default='float32', choices=('float32', 'float16'), help='stored weight dtype')
    parser.add_argument('--model-kwargs', nargs='*', action=ParseKwargs,
                        help='for a bare weights file: every model argument it was trained with that the weights do '
                             'not fix, e.g. local_window="(2, 4, 4)" num_heads=8 (no values: the defaults)')
    parser.add_argument('--train-dataset', help='dataset the weights were trained on, e.g. DFEW (stated on the card)')
    parser.add_argument('--recipe', help='how the weights were trained: command line or URL (card and manifest)')
    parser.add_argument('--license', default='mit', help='license of the weights (default: mit)')
    args = parser.parse_args(argv)

    import logoformer_timm  # noqa: F401  (registers the models)
    from logoformer_timm.cli import run_cli
    from logoformer_timm.hub import export_folder

    def run():
        result = export_folder(
            args.model, args.checkpoint, args.out, tag=args.tag, metrics=args.metrics, dtype=args.dtype,
            model_kwargs=args.model_kwargs, train_dataset=args.train_dataset, recipe=args.recipe, license=args.license)
        print(f'wrote {result.folder}: ' + ', '.join(sorted(p.name for p in result.folder.iterdir())))
        print(f'sha256(model.safetensors) = {result.sha256}')
        if result.hf_hub_id:
            print(f'Hub repo: {result.hf_hub_id}')
        print(result.manifest_note)
        if result.manifest_entry:
            print(result.manifest_entry)

    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
