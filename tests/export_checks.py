"""The zoo's shared export check: a model's ONNX export gives its eager logits under onnxruntime."""
from typing import Callable, Sequence

import pytest
import torch


def assert_onnx_matches_eager(
        model: torch.nn.Module,
        path: str,
        clip_shape: Sequence[int],
        batches: Sequence[int] = (1, 3),
        num_classes: int = 7,
        make_clip: Callable[..., torch.Tensor] = torch.randn,
) -> None:
    """Export ``model`` (in eval mode) to ``path`` and check onnxruntime's logits against eager ones (1e-4) for
    clips ``(batch, *clip_shape)`` of each batch size (the export's batch axis is dynamic); skips without onnxruntime."""
    pytest.importorskip('onnxscript')
    ort = pytest.importorskip('onnxruntime')
    from logoformer_timm.video.export import export_onnx
    session = ort.InferenceSession(export_onnx(model, str(path)), providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    for batch in batches:
        clip = make_clip(batch, *clip_shape)
        with torch.no_grad():
            expected = model(clip)
        got = torch.from_numpy(session.run(None, {name: clip.numpy()})[0])
        assert got.shape == (batch, num_classes) and (got - expected).abs().max().item() < 1e-4
