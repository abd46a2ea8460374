"""``python -m logoformer_timm.video.export``: a LOGO-Former as ONNX (dynamic batch axis) and/or a ``torch.export`` program.

ONNX goes through ``torch.onnx.export(..., dynamo=True)`` (needs ``onnx`` and ``onnxscript``, the ``export``
extra) at opset :data:`ONNX_OPSET`. Input ``clip``: ``(batch, C, T, H, W)`` float RGB in [0, 1] (or
``(batch, T, C, H, W)`` for ``input_layout='BTCHW'``); output ``logits``: ``(batch, num_classes)``. Frames and
resolution are fixed at the model's ``num_frames`` and ``img_size``.
"""
import argparse
import sys
from typing import List, Optional

import torch
import torch.nn as nn

__all__ = ['ONNX_OPSET', 'export_onnx', 'export_program', 'example_input', 'main']

ONNX_OPSET = 18
MAX_BATCH = 1024


def example_input(model: nn.Module, batch_size: int = 2) -> torch.Tensor:
    """A random clip in the model's layout, frames and resolution."""
    c, t, (h, w) = model.in_chans, model.num_frames, model.img_size
    shape = (batch_size, c, t, h, w) if model.input_layout == 'BCTHW' else (batch_size, t, c, h, w)
    return torch.rand(shape, device=next(model.parameters()).device)


def _batch_dim() -> dict:
    return {'x': {0: torch.export.Dim('batch', min=1, max=MAX_BATCH)}}


def export_program(model: nn.Module, path: Optional[str] = None) -> torch.export.ExportedProgram:
    """``torch.export`` the model in eval mode with a dynamic batch axis; save it to ``path`` (``.pt2``) if given."""
    program = torch.export.export(model.eval(), (example_input(model),), dynamic_shapes=_batch_dim())
    if path:
        torch.export.save(program, path)
    return program


def export_onnx(model: nn.Module, path: str, opset: int = ONNX_OPSET) -> str:
    """Write the model as ONNX with input ``clip`` and output ``logits``, batch axis dynamic; return ``path``."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError('ONNX export needs onnx and onnxscript: pip install "logoformer-timm[export]".') from e
    program = torch.onnx.export(
        model.eval(), (example_input(model),), dynamo=True, dynamic_shapes=_batch_dim(), opset_version=opset,
        input_names=['clip'], output_names=['logits'], verbose=False)
    program.save(path)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; user errors print one line to stderr and exit with 1."""
    parser = argparse.ArgumentParser(prog='python -m logoformer_timm.video.export', description=__doc__.splitlines()[0])
    parser.add_argument('--model', required=True, help='timm model name, e.g. logoformer_base')
    parser.add_argument('--checkpoint', help='.safetensors / .pth weights file, or a model folder with config.json')
    parser.add_argument('--onnx', metavar='OUT.onnx', help=f'write ONNX (opset {ONNX_OPSET}, dynamic batch axis)')
    parser.add_argument('--torch-export', metavar='OUT.pt2', help='write a torch.export program (dynamic batch axis)')
    parser.add_argument(
        '--random-init', action='store_true', help='export random weights (to test a deployment pipeline)')
    args = parser.parse_args(argv)
    if not args.onnx and not args.torch_export:
        parser.error('say what to write: --onnx OUT.onnx and/or --torch-export OUT.pt2')
    if (args.checkpoint is None) == (not args.random_init):
        parser.error('pass --checkpoint PATH, or --random-init to export random weights')
    from ..cli import check_output_file, run_cli
    from ..weights.loading import load_model

    def run() -> None:
        for flag, out in (('--onnx', args.onnx), ('--torch-export', args.torch_export)):  # before the model is built
            if out:
                check_output_file(out, flag)
        model, weights = load_model(args.model, args.checkpoint, random_init=args.random_init)
        shape = tuple(example_input(model, 1).shape[1:])
        if args.torch_export:
            export_program(model, args.torch_export)
            print(f'wrote {args.torch_export}: torch.export program, input (batch, {", ".join(map(str, shape))}), '
                  f'weights {weights}')
        if args.onnx:
            export_onnx(model, args.onnx)
            print(f'wrote {args.onnx}: ONNX opset {ONNX_OPSET}, input clip (batch, {", ".join(map(str, shape))}) '
                  f'{model.input_layout}, output logits (batch, {model.num_classes}), weights {weights}')

    return run_cli(run, prog='export', code=1)


if __name__ == '__main__':
    sys.exit(main())
