"""How far ``logoformer-eval --precision bf16`` moves the probabilities of float32, on a fixed set:
``python benchmarks/bf16_drift.py --help``.

Runs ``logoformer-eval`` twice on the same list and weights, ``--precision fp32`` and ``--precision bf16`` (weights
cast to bfloat16), and compares their ``predictions.jsonl`` clip by clip: the largest and the mean absolute change
of a class probability, the clips where one moved by more than 0.01, the clips whose predicted class changed, and UAR / WAR of both. Every argument after
``--`` goes to both evaluations as it is (the list, the weights, the protocol). ``--seed-weights NAME`` evaluates
NAME with seeded random weights instead of a checkpoint (written to a temporary file), to measure a larger model
on the same set.
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

import logoformer_timm  # noqa: F401  (registers the models)
from logoformer_timm.bench.runner import _cpu_name
from logoformer_timm.dfer import evaluate
from logoformer_timm.dfer.eval_files import read_result_pair


def drift(eval_args: List[str], folder: Path) -> Dict[str, Any]:
    """Evaluate in fp32 and bf16 into ``folder`` and compare the two results."""
    results = {}
    for precision in ('fp32', 'bf16'):
        out = folder / precision
        if evaluate.main([*eval_args, '--precision', precision, '--output', str(out)]) != 0:
            raise SystemExit(f'logoformer-eval --precision {precision} failed')
        results[precision] = read_result_pair(str(out))
    (m32, p32), (m16, p16) = results['fp32'], results['bf16']
    pairs = [(x, y) for x, y in zip(p32, p16) if x['probs']]
    changes = sorted(abs(a - b) for x, y in pairs for a, b in zip(x['probs'], y['probs']))
    x, y = max(pairs, key=lambda pair: max(abs(a - b) for a, b in zip(pair[0]['probs'], pair[1]['probs'])))
    flipped = [x['path'] for x, y in zip(p32, p16) if x['pred'] != y['pred']]
    return dict(
        clips=len(pairs), classes=len(p32[0]['probs']),
        max_abs_probability_change=changes[-1], mean_abs_probability_change=statistics.fmean(changes),
        clips_changed_over_0_01=sum(max(abs(a - b) for a, b in zip(x['probs'], y['probs'])) > 0.01 for x, y in pairs),
        largest_change=dict(path=x['path'], fp32=x['probs'], bf16=y['probs']),
        predicted_class_changed=len(flipped), changed_clips=flipped[:10],
        uar=dict(fp32=m32['uar'], bf16=m16['uar']), war=dict(fp32=m32['war'], bf16=m16['war']),
        largest_probability_fp32=max(max(x['probs']) for x in p32 if x['probs']))


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, eval_args = (argv[:argv.index('--')], argv[argv.index('--') + 1:]) if '--' in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seed-weights', metavar='NAME', help='evaluate NAME with seed-0 random weights')
    parser.add_argument('--model-kwargs', default='{}', help='JSON kwargs of --seed-weights, e.g. {"num_classes": 2}')
    parser.add_argument('--results', help='also write the comparison to this JSON file')
    args = parser.parse_args(ours)
    with tempfile.TemporaryDirectory() as tmp:
        if args.seed_weights:
            import timm
            from safetensors.torch import save_file
            torch.manual_seed(0)
            model = timm.create_model(args.seed_weights, **json.loads(args.model_kwargs))
            save_file(model.state_dict(), f'{tmp}/seeded.safetensors')
            eval_args = [*eval_args, '--model', args.seed_weights, '--checkpoint', f'{tmp}/seeded.safetensors']
        result = dict(eval_args=eval_args, seed_weights=args.seed_weights, cpu=_cpu_name(), torch=torch.__version__,
                      **drift(eval_args, Path(tmp)))
    print(json.dumps(result, indent=2))
    if args.results:
        Path(args.results).write_text(json.dumps(result, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
