"""The inference fast path (prepare_for_inference): bf16 autocast and torch.compile against eager fp32."""
import pytest
import timm
import torch

from logoformer_timm.weights.inference import InferenceModel, PrecisionError, autocast_dtype, prepare_for_inference

BF16_PROB_ATOL = 1e-2  # bf16 keeps 8 bits of mantissa: probabilities agree with fp32 to about 1e-3 here
COMPILE_ATOL = 1e-4  # compiled fp32: the same maths with fused kernels


def _model(**kwargs):
    torch.manual_seed(0)
    return timm.create_model('logoformer_tiny', num_frames=4, img_size=64, **kwargs).eval()


@torch.inference_mode()
def test_bf16_matches_fp32_within_tolerance():
    model = _model()
    x = torch.rand(2, 3, 4, 64, 64)
    reference = model(x)
    fast = prepare_for_inference(model, 'bf16')
    assert isinstance(fast, InferenceModel) and fast.model is model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # bf16 casts the weights (in place)
    out = fast(x)  # float32 clips are cast to the weights' dtype
    assert out.dtype == torch.float32 and out.shape == reference.shape
    torch.testing.assert_close(out.softmax(-1), reference.softmax(-1), atol=BF16_PROB_ATOL, rtol=0)
    assert not torch.equal(out, reference)  # it really ran in bf16
    # what predict and eval read from the model stays reachable
    assert (fast.num_frames, fast.num_classes, fast.input_layout) == (4, model.num_classes, model.input_layout)
    assert fast.pretrained_cfg is model.pretrained_cfg and not fast.training
    assert prepare_for_inference(model, 'fp32') is model


def test_fp16_on_cpu_and_bad_precision_are_clear_errors():
    if torch.cpu._is_amx_fp16_supported():
        assert autocast_dtype('fp16', 'cpu') == torch.float16
    else:
        with pytest.raises(PrecisionError, match='fp16 on this CPU would be emulated.*use --precision bf16'):
            prepare_for_inference(_model(depth=1), 'fp16')
    with pytest.raises(PrecisionError, match='one of fp32, bf16, fp16'):
        autocast_dtype('int8', 'cpu')
    assert autocast_dtype('bf16', 'cpu') == torch.bfloat16 and autocast_dtype('fp32', 'cpu') is None


@torch.inference_mode()
def test_compile_matches_eager():
    """torch.compile (inductor) once, on the smallest model and clip: compiling takes tens of seconds on CPU."""
    torch.manual_seed(0)
    model = timm.create_model('logoformer_tiny', num_frames=2, img_size=32, depth=1, embed_dim=64, num_heads=2)
    x = torch.rand(1, 3, 2, 32, 32)
    reference = model.eval()(x)
    compiled = prepare_for_inference(model, 'fp32', compile=True)
    assert compiled.num_frames == 2  # torch.compile's wrapper forwards attributes too
    torch.testing.assert_close(compiled(x), reference, atol=COMPILE_ATOL, rtol=0)
