"""``python -m logoformer_timm.bench.summary``: build every LOGO-Former variant, print params, GMACs and output shape."""
import argparse
from typing import List, Optional

import timm
import torch

from .counting import COUNTER_NAME, count_flops


def summarize(names: List[str], num_frames: int = 16, img_size: int = 112) -> List[dict]:
    """Params (M), GMACs/GFLOPs (attention included) and the output shape of a forward pass per model name."""
    rows = []
    for name in names:
        model = timm.create_model(name, num_frames=num_frames, img_size=img_size).eval()
        x = torch.rand(1, model.in_chans, num_frames, img_size, img_size)
        with torch.inference_mode():
            out = model(x)
        count = count_flops(model, tuple(x.shape))
        rows.append(dict(
            model=name,
            param_count=sum(p.numel() for p in model.parameters()) / 1e6,
            gmacs=count.gmacs,
            gflops=count.gflops,
            input_shape=tuple(x.shape),
            output_shape=tuple(out.shape),
        ))
    return sorted(rows, key=lambda row: row['param_count'])


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', default='logoformer_*', help='model name or wildcard (default: logoformer_*)')
    parser.add_argument('--num-frames', type=int, default=16)
    parser.add_argument('--img-size', type=int, default=112)
    args = parser.parse_args(argv)
    names = timm.list_models(args.model) if '*' in args.model else [args.model]
    if not names:
        parser.error(f'no registered model matches {args.model!r}')
    print(f'clip: {args.num_frames}x{args.img_size}x{args.img_size}, batch 1; counter: {COUNTER_NAME}')
    print(f'{"model":<20}{"params (M)":>12}{"GMACs":>9}{"GFLOPs":>9}  input -> output')
    for row in summarize(names, args.num_frames, args.img_size):
        print(f'{row["model"]:<20}{row["param_count"]:>12.2f}{row["gmacs"]:>9.2f}{row["gflops"]:>9.2f}  '
              f'{row["input_shape"]} -> {row["output_shape"]}')


if __name__ == '__main__':
    main()
