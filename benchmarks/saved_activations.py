"""Bytes each part of a model saves for backward in one training forward pass (exact, from autograd's hooks).

``python benchmarks/saved_activations.py --model logoformer_base 'logoformer_base[block_types=joint]' --clip 32x224``

Every tensor autograd saves is attributed to the innermost part (stem, local/global/joint attention, MLP, ...)
running when it was saved; tensors sharing storage (views, and a tensor saved by two ops) count once, under the
part that saved them first. Parameters are not activations and are left out. This is what a training step holds
between forward and backward on top of the weights, gradients and optimizer state: it explains the training
peak-memory difference between models part by part.
"""
import argparse
import os
import sys
from collections import defaultdict
from typing import Dict, Tuple

import torch

from logoformer_timm.bench import LOGOFORMER_PARTS, build_model, resolve_models
from logoformer_timm.bench.profiling import part_modules


def saved_bytes_by_part(model: torch.nn.Module, x: torch.Tensor) -> Tuple[Dict[str, int], int]:
    """Bytes saved for backward per part (dict, in order of first use) and in total, for ``model(x)``."""
    stack, by_part, seen = [], defaultdict(int), set()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    handles = []
    for part, _, module in part_modules(model, LOGOFORMER_PARTS):
        handles.append(module.register_forward_pre_hook(lambda m, a, part=part: stack.append(part)))
        handles.append(module.register_forward_hook(lambda m, a, o: stack.pop() and None))  # None: keep the output

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen and key not in params and key != 0:
            seen.add(key)
            by_part[stack[-1] if stack else 'other'] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    for h in handles:
        h.remove()
    return dict(by_part), sum(by_part.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', nargs='+', default=['logoformer_base', 'logoformer_base[block_types=joint]'])
    parser.add_argument('--clip', nargs='+', default=['32x224'], help='FRAMESxSIZE, one or more')
    parser.add_argument('-b', '--batch-size', type=int, default=1)
    args = parser.parse_args()
    print(f'# Activations saved for backward, by part (MB, 1e6 bytes)\n\n'
          f'command: `python benchmarks/saved_activations.py {" ".join(sys.argv[1:])}`; '
          f'load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}; float32, batch {args.batch_size}, '
          f'train mode, one forward pass (no timing: the bytes are exact)\n')
    for clip in args.clip:
        frames, size = (int(v) for v in clip.split('x'))
        results = {}
        for spec in resolve_models(args.model):
            torch.manual_seed(0)
            model = build_model(spec, frames, size).train()
            x = torch.rand(args.batch_size, 3, frames, size, size)
            results[spec.label] = saved_bytes_by_part(model, x)
        parts = list(dict.fromkeys(p for by_part, _ in results.values() for p in by_part))
        labels = list(results)
        print(f'\n## {frames}x{size}x{size}\n')
        print('| part | ' + ' | '.join(labels) + ' |')
        print('|---|' + '---:|' * len(labels))
        for part in parts + ['total']:
            cells = [(total if part == 'total' else by_part.get(part, 0)) / 1e6 for by_part, total in results.values()]
            print(f'| {part} | ' + ' | '.join(f'{c:.1f}' for c in cells) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
