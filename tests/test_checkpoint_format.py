"""The published checkpoint format is frozen: key names and shapes of every variant, and the conversions of
earlier formats in ``checkpoint_filter_fn`` (the only way a format may change)."""
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from logoformer_timm import checkpoint_filter_fn

FORMAT = json.loads((Path(__file__).parent / 'data' / 'state_dict_format.json').read_text())


@pytest.mark.parametrize('name', ['logoformer_tiny', 'logoformer_small', 'logoformer_base'])
def test_state_dict_format_is_frozen(name):
    """A changed key or shape breaks every published checkpoint: convert the old format in checkpoint_filter_fn,
    test the conversion, and only then update tests/data/state_dict_format.json."""
    state_dict = timm.create_model(name, num_classes=7, device='meta').state_dict()
    assert {k: list(v.shape) for k, v in state_dict.items()} == FORMAT[name]


def old_summary(module, x):
    """The summary as landed before: a depthwise Conv3d (kernel = stride = pool) over the zero-padded grid."""
    pool = module.pool_size
    conv = torch.nn.Conv3d(x.shape[-1], x.shape[-1], pool, stride=pool, groups=x.shape[-1], dtype=x.dtype)
    with torch.no_grad():
        conv.weight.copy_(module.weight.reshape(conv.weight.shape))
        conv.bias.copy_(module.bias)
    pads = [(-s) % p for s, p in zip(x.shape[1:4], pool)]
    grid = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0])).permute(0, 4, 1, 2, 3)
    return conv(grid).flatten(2).transpose(1, 2), conv


@pytest.mark.parametrize('grid,pool', [((4, 8, 8), (2, 4, 4)), ((3, 7, 5), (2, 4, 4)), ((2, 2, 2), (2, 4, 4))])
def test_window_summary_equals_the_old_depthwise_conv3d(grid, pool):
    from logoformer_timm.layers import WindowSummary
    module = WindowSummary(8, pool).double()
    x = torch.randn(2, *grid, 8, dtype=torch.double)
    with torch.no_grad():
        expected, _ = old_summary(module, x)
        torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


def to_old_format(state_dict, pool=(2, 4, 4)):
    """A state dict as the landed Conv3d code saved it: summary weights (C, 1, kt, kh, kw)."""
    return {k: v.reshape(v.shape[0], 1, *pool) if k.endswith('summary.weight') else v for k, v in state_dict.items()}


def test_old_conv3d_checkpoint_loads_with_the_same_logits(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model('logoformer_tiny', num_frames=4, img_size=64).eval()
    x = torch.rand(1, 3, 4, 64, 64)
    # the old model's logits: every global attention summarises with the depthwise Conv3d
    hooks = [module.register_forward_hook(lambda mod, args, out: old_summary(mod, args[0])[0])
             for name, module in src.named_modules() if name.endswith('attn.summary')]
    with torch.no_grad():
        old_logits = src(x)
    for hook in hooks:
        hook.remove()
    old_state = to_old_format(src.state_dict())
    assert old_state['blocks.0.global_attn.attn.summary.weight'].shape == (256, 1, 2, 4, 4)
    path = tmp_path / 'old.safetensors'
    save_file({k: v.contiguous() for k, v in old_state.items()}, str(path))
    loaded = timm.create_model(
        'logoformer_tiny', num_frames=4, img_size=64, pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), old_logits, rtol=1e-5, atol=1e-6)


def test_filter_converts_only_the_old_summary_shape():
    model = timm.create_model('logoformer_tiny', num_frames=4, img_size=64)
    state = model.state_dict()
    converted = checkpoint_filter_fn(to_old_format(state), model)
    for key, value in state.items():
        torch.testing.assert_close(converted[key], value, rtol=0, atol=0, msg=key)
