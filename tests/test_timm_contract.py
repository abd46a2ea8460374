"""timm's model contract (ported from timm's tests/test_models.py) for every registered logoformer_* name.

Every test of timm's file except the TorchScript ones has a port here (its name, or the name in brackets):
test_model_inference, test_model_forward, test_model_backward, test_model_default_cfgs,
test_model_default_cfgs_non_std, test_model_load_pretrained, test_model_features_pretrained,
test_model_forward_features [test_features_only], test_model_forward_intermediates_features,
test_model_forward_intermediates, test_model_forward_fx, test_model_backward_fx. timm's tests of pretrained weights
download them; no logoformer weights are published, so the ports load the weights of a saved model (local file).

The adaptations to clips: inputs are (B, C, T, H, W) clips built from the pretrained config's input_size and the
model's num_frames; maps are 5-D, so formats are 'NCTHW' (channel axis 1, spatial axes 3 and 4) or the blocks' own
'NTHWC' (fx features), read from the wrapper's output_fmt as timm reads it; forward_features returns (B, L, C)
tokens with L = T' * H' * W' (the cfg's pool_size); logoformer_tiny has two blocks, so two feature levels (timm asks
three). Small clips are used wherever the contract does not depend on size.
"""
import fnmatch
import math
import re
import warnings

import pytest
import timm
import torch
from timm.layers import Format
from timm.models import FeatureInfo
from timm.models._manipulate import group_parameters

# the zoo: arch only
MODEL_NAMES = timm.list_models('logoformer_*', include_tags=True) + ['former_dfer', 'mae_dfer', 'dfer_clip', 's2d']
SMALL = dict(num_frames=4, img_size=64)  # cheap model/clip size where the contract is size-independent
# other architectures: narrow and shallow everywhere (the contract does not depend on width), their own small size
CHEAP = {'mae_dfer': dict(depth=2, embed_dim=64, num_heads=2),
         'dfer_clip': dict(frame_embed_dim=64, frame_depth=2, frame_num_heads=1, depth=2, embed_dim=64, num_heads=2),
         's2d': dict(depth=2, embed_dim=64, num_heads=2)}
SMALL_FOR = {'mae_dfer': dict(num_frames=4, img_size=80, region_size=(1, 5, 5)),
             'dfer_clip': dict(num_frames=4, img_size=64), 's2d': dict(num_frames=4, img_size=64)}
PAPER_IDS = {'former_dfer': 'doi:10.1145/3474085.3475292', 'mae_dfer': 'arXiv:2307.02227',
             'dfer_clip': 'arXiv:2308.13382', 's2d': 'arXiv:2312.05447'}  # LOGO-Former's otherwise


def cheap(model_name):
    return CHEAP.get(model_name.split('.')[0], {})


def small(model_name):
    return dict(cheap(model_name), **SMALL_FOR.get(model_name.split('.')[0], SMALL))


CHANNEL_DIM = {'NCTHW': 1, 'NTHWC': 4, 'NLC': 2, 'NRLC': 3, 'NTLC': 3}  # timm's get_channel_dim for the clip formats
SPATIAL_DIMS = {'NCTHW': (3, 4), 'NTHWC': (2, 3)}  # timm's get_spatial_dim: (H', W') of the 5-D maps
# tokens; MAE-DFER's per region, S2D's per frame
BLOCK_OUTPUT_FMT = {'former_dfer': 'NLC', 'mae_dfer': 'NRLC', 'dfer_clip': 'NLC', 's2d': 'NTLC'}


def min_feature_levels(model_name):
    """timm asks at least three feature levels; logoformer_tiny (and the cheap zoo forms) have two blocks, so two."""
    return 2 if model_name.startswith('logoformer_tiny') or cheap(model_name).get('depth') == 2 else 3


def check_feature_maps(outputs, channels, reductions, output_fmt, input_size, batch_size):
    """timm's checks of feature maps: channels on the format's channel axis, spatial sizes within the reduction."""
    feat_axis = CHANNEL_DIM[output_fmt]
    assert len(channels) == len(outputs)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.ndim == len(output_fmt) and c == o.shape[feat_axis]
        for axis, size in zip(SPATIAL_DIMS.get(output_fmt, ()), input_size[-2:]):
            assert o.shape[axis] <= math.ceil(size / r) + 1
        assert o.shape[0] == batch_size
        assert not torch.isnan(o).any()


def clip_for(model, batch_size=1, device='cpu', dtype=torch.float32):
    c, h, w = model.pretrained_cfg['input_size']
    if (h, w) != model.img_size:  # built for another size on purpose
        h, w = model.img_size
    return torch.randn(batch_size, c, model.num_frames, h, w, device=device, dtype=dtype)


def test_all_variants_registered():
    assert {'logoformer_tiny', 'logoformer_small', 'logoformer_base'} <= set(timm.list_models('logoformer_*'))
    assert set(timm.list_models(module='logoformer')) >= {'logoformer_tiny', 'logoformer_small', 'logoformer_base'}


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_model_forward(model_name):
    model = timm.create_model(model_name, **cheap(model_name)).eval()
    x = clip_for(model, batch_size=2)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()
        model.set_grad_checkpointing()
        out2 = model(x)
    torch.testing.assert_close(out, out2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_model_backward(model_name):
    model = timm.create_model(model_name, num_classes=42, **small(model_name)).train()
    num_params = sum(p.numel() for p in model.parameters())
    out = model(clip_for(model, batch_size=2))
    out.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f'{name} has no grad'
    num_grad = sum(p.grad.numel() for p in model.parameters() if p.grad is not None)
    assert out.shape[-1] == 42
    assert num_params == num_grad


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_model_default_cfgs(model_name):
    """timm's test for models with unpooled features: here forward_features gives (B, T'*H'*W', C) tokens, the cfg's
    pool_size being the grid (T', H', W'); without pooling and classifier, forward gives the same tokens."""
    model = timm.create_model(model_name, **cheap(model_name)).eval()  # the default size, narrow
    cfg = model.pretrained_cfg
    state_dict = model.state_dict()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    tokens = math.prod(cfg['pool_size']) + getattr(model, 'num_prefix_tokens', 0)  # the zoo's class / region tokens
    x = clip_for(model)
    with torch.no_grad():
        outputs = model.forward_features(x)
        outputs_pre = model.forward_head(outputs, pre_logits=True)
        assert outputs.shape == (1, tokens, model.num_features)
        assert outputs_pre.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model.num_classes == 0
        outputs = model(x)
        assert outputs.shape == outputs_pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0, '')  # classifier removed and global pooling disabled
        assert model(x).shape == (1, tokens, model.num_features)
        model = timm.create_model(model_name, num_classes=0, global_pool='', **cheap(model_name)).eval()
        assert model(x).shape == (1, tokens, model.num_features)
    for name in (cfg['classifier'],) if isinstance(cfg['classifier'], str) else cfg['classifier']:
        assert f'{name}.weight' in state_dict
    for name in (cfg['first_conv'],) if isinstance(cfg['first_conv'], str) else cfg['first_conv']:
        assert f'{name}.weight' in state_dict


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_model_default_cfgs_non_std(model_name):
    model = timm.create_model(model_name, **cheap(model_name)).eval()
    cfg = model.pretrained_cfg
    state_dict = model.state_dict()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    assert len(cfg['input_size']) == 3 and model.in_chans == cfg['input_size'][0]
    assert cfg['num_classes'] == 7 and len(cfg['label_names']) == 7
    assert cfg['paper_ids'] == PAPER_IDS.get(model_name.split('.')[0], 'arXiv:2305.03343') and cfg['license']
    assert len(cfg['mean']) == len(cfg['std']) == model.in_chans

    x = clip_for(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        feat_dim = -1 if feats.ndim == 3 else 1
        assert feats.shape[feat_dim] == model.num_features
        assert pre.shape[1] == model.head_hidden_size

        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.ndim == 2 and out.shape[1] == model.head_hidden_size
        assert out.shape == pre.shape

        model = timm.create_model(model_name, num_classes=0, **cheap(model_name)).eval()
        out = model(x)
        assert out.shape[-1] == model.num_features

    for name in (cfg['classifier'],) if isinstance(cfg['classifier'], str) else cfg['classifier']:
        assert f'{name}.weight' in state_dict
    first_conv = cfg['first_conv']
    assert isinstance(first_conv, (str, tuple, list))
    for name in (first_conv,) if isinstance(first_conv, str) else first_conv:
        assert f'{name}.weight' in state_dict


@pytest.fixture(scope='module')
def saved_tiny(tmp_path_factory):
    """A logoformer_tiny saved as safetensors: the local stand-in for the published weights timm's tests download."""
    from safetensors.torch import save_file
    torch.manual_seed(1)
    model = timm.create_model('logoformer_tiny', **SMALL).eval()
    path = tmp_path_factory.mktemp('weights') / 'model.safetensors'
    save_file(model.state_dict(), str(path))
    return model, path


def test_model_inference(saved_tiny):
    """timm's test of pretrained weights on recorded tensors: outputs, features and pre-logits of the loaded model."""
    source, path = saved_tiny
    x = clip_for(source)
    with torch.inference_mode():
        expected = dict(output=source(x), features=source.forward_features(x))
        expected['pre_logits'] = source.forward_head(expected['features'], pre_logits=True)
    model = timm.create_model(
        'logoformer_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL).eval()
    with torch.inference_mode():
        features = model.forward_features(x)
        got = dict(output=model(x), features=features, pre_logits=model.forward_head(features.clone(), pre_logits=True))
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_model_load_pretrained(saved_tiny):
    """timm's test: pretrained weights load with in_chans != 3 and another num_classes."""
    _, path = saved_tiny
    model = timm.create_model('logoformer_tiny', pretrained=True, in_chans=1, num_classes=5,
                              pretrained_cfg_overlay=dict(file=str(path)), **SMALL)
    assert model.stem.conv1.weight.shape[1] == 1 and model.head.out_features == 5


def test_model_features_pretrained(saved_tiny):
    """timm's test: pretrained weights load when features_only=True."""
    source, path = saved_tiny
    model = timm.create_model('logoformer_tiny', pretrained=True, features_only=True,
                              pretrained_cfg_overlay=dict(file=str(path)), **SMALL)
    torch.testing.assert_close(model.model.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_model_api_contract(model_name):
    with pytest.raises(TypeError):
        timm.create_model(model_name, device='meta', not_a_model_arg=1, **cheap(model_name))
    model = timm.create_model(model_name, device='meta', **cheap(model_name))
    assert all(t.device.type == 'meta' for t in model.state_dict().values())
    import inspect
    assert inspect.signature(model.reset_classifier).parameters['global_pool'].default is None

    groups = group_parameters(model, model.group_matcher())
    assert len(groups) > 1
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) > 1
    param_names = [n for n, _ in model.named_parameters()]
    for pattern in model.no_weight_decay():
        assert any(fnmatch.fnmatch(n, pattern) for n in param_names), f'{pattern} matches no parameter'


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_model_device_dtype(model_name):
    model = timm.create_model(model_name, device='meta', **cheap(model_name)).to(dtype=torch.float64)
    for training in (True, False):
        model.train(training)
        for num_classes in (0, 2):
            model.reset_classifier(num_classes)
            for p in model.head.parameters():
                assert p.device.type == 'meta' and p.dtype == torch.float64
            assert model.head.training == training

    model = timm.create_model(model_name, **small(model_name))
    model.requires_grad_(False)
    model.reset_classifier(0)
    assert not any(p.requires_grad for p in model.parameters())

    model = timm.create_model(model_name, **small(model_name)).eval().to(torch.bfloat16)
    with torch.no_grad():
        assert model(clip_for(model, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize('model_name', MODEL_NAMES)
@pytest.mark.parametrize('output_fmt', ['NCTHW', 'NCHW', Format.NCHW, 'NLC', Format.NLC])
def test_model_forward_intermediates(model_name, output_fmt):
    """timm passes output_fmt='NCHW' (its channels-first format): 'NCTHW' maps here, as the enum form."""
    model = timm.create_model(model_name, **small(model_name)).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    assert len(info.channels()) >= min_feature_levels(model_name)
    x = clip_for(model)
    t, h, w = model.grid_size
    maps = output_fmt != 'NLC'
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, output_fmt=output_fmt)
        assert len(intermediates) == len(info.channels()) == len(model.blocks)
        if maps:
            check_feature_maps(intermediates, info.channels(), info.reduction(), 'NCTHW', x.shape, 1)
        for c, o in zip(info.channels(), intermediates):
            assert o.shape == ((1, c, t, h, w) if maps else (1, t * h * w, c))
            assert torch.isfinite(o).all()
        torch.testing.assert_close(final, model.forward_features(x), rtol=1e-5, atol=1e-8)
        # the last intermediate with norm=True is forward_features
        normed = model.forward_intermediates(x, indices=1, norm=True, output_fmt='NLC', intermediates_only=True)
        prefix = getattr(model, 'num_prefix_tokens', 0)  # timm's convention: intermediates drop class tokens
        torch.testing.assert_close(normed[0], final[:, prefix:], rtol=1e-5, atol=1e-8)
        model.set_grad_checkpointing()
        final3, _ = model.forward_intermediates(x, output_fmt=output_fmt)
        torch.testing.assert_close(final, final3, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_prune_intermediate_layers_contract(model_name):
    model = timm.create_model(model_name, **small(model_name)).eval()
    x = clip_for(model)
    with torch.no_grad():
        full = model.forward_intermediates(x, intermediates_only=True)
        early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], full[0])
        kept = model.prune_intermediate_layers(indices=[0], prune_norm=True)
        assert kept == [0] and len(model.blocks) == 1 and model.num_classes == 0
        pruned = model.forward_intermediates(x, indices=[0], intermediates_only=True)
        torch.testing.assert_close(pruned[0], full[0])
    # the pruned model trains with no unused parameters
    model.train()
    out = model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
    out.mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


def test_features_only_backbone_keeps_the_fine_tuning_api(monkeypatch):
    # timm's FeatureGetterNet hides set_grad_checkpointing and group_matcher: docs/design.md's way is backbone.model
    from timm.optim import create_optimizer_v2
    backbone = timm.create_model('logoformer_small', features_only=True, **SMALL)
    optimizer = create_optimizer_v2(backbone.model, 'adamw', lr=1e-3, layer_decay=0.5)
    scale_of = {id(p): g['lr_scale'] for g in optimizer.param_groups for p in g['params']}
    assert set(scale_of) == {id(p) for p in backbone.parameters()}  # every backbone parameter, once
    depth = len(backbone.model.blocks)
    assert scale_of[id(backbone.model.stem.conv1.weight)] == 0.5 ** depth
    for i, block in enumerate(backbone.model.blocks):  # block i learns at 0.5 ** (depth - 1 - i)
        assert {scale_of[id(p)] for p in block.parameters()} == {0.5 ** (depth - 1 - i)}
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint', lambda *a, **k: calls.append(1) or real(*a, **k))
    backbone.model.set_grad_checkpointing()
    sum(o.sum() for o in backbone(torch.randn(1, 3, 4, 64, 64))).backward()
    assert len(calls) == depth


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_features_only(model_name):
    """timm's test_model_forward_features: the wrapper's output_fmt names the maps' axes."""
    model = timm.create_model(model_name, features_only=True, **small(model_name)).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) == len(timm.create_model(model_name, **small(model_name)).blocks) >= min_feature_levels(model_name)
    assert model.output_fmt == 'NCTHW' and model.feature_info.get('output_fmt') == ['NCTHW'] * len(channels)
    frames, size = small(model_name)['num_frames'], small(model_name)['img_size']
    temporal = model.feature_info.get('temporal_reduction')
    with torch.no_grad():
        outs = model(torch.randn(2, 3, frames, size, size))
    check_feature_maps(outs, channels, reductions, model.output_fmt, (size, size), 2)
    for c, r, tr, o in zip(channels, reductions, temporal, outs):
        assert o.shape == (2, c, frames // tr, size // r, size // r)
    one = timm.create_model(model_name, features_only=True, out_indices=(0,), **small(model_name))
    assert one.feature_info.channels() == [channels[0]]


@pytest.mark.parametrize('model_name', MODEL_NAMES)
@pytest.mark.parametrize('feature_cls', ['getter', 'fx'])
def test_model_forward_intermediates_features(model_name, feature_cls):
    """timm's test of the getter wrapper (and of the fx one here): maps in the format the wrapper names."""
    model = timm.create_model(model_name, features_only=True, feature_cls=feature_cls, **small(model_name)).eval()
    assert model.output_fmt == ('NCTHW' if feature_cls == 'getter' else BLOCK_OUTPUT_FMT.get(model_name, 'NTHWC'))
    assert model.feature_info.get('output_fmt') == [model.output_fmt] * len(model.feature_info)
    assert len(model.feature_info.channels()) >= min_feature_levels(model_name)
    frames, size = small(model_name)['num_frames'], small(model_name)['img_size']
    with torch.no_grad():
        outs = model(torch.randn(1, 3, frames, size, size))
    check_feature_maps(outs, model.feature_info.channels(), model.feature_info.reduction(), model.output_fmt,
                       (size, size), 1)


def test_output_fmt_string_and_enum_forms_agree():
    """Every format forward_intermediates accepts gives the same maps as a string and as timm's Format enum; the
    refused ones are refused in both forms."""
    model = timm.create_model('logoformer_tiny', **SMALL).eval()
    x = torch.rand(1, 3, 4, 64, 64)
    with torch.no_grad():
        get = lambda fmt: model.forward_intermediates(x, indices=1, output_fmt=fmt, intermediates_only=True)[0]
        ncthw, nlc = get('NCTHW'), get('NLC')
        assert ncthw.shape == (1, 256, 4, 4, 4) and nlc.shape == (1, 64, 256)
        for fmt, expected in (('NCHW', ncthw), (Format.NCHW, ncthw), (Format.NLC, nlc)):
            torch.testing.assert_close(get(fmt), expected, rtol=0, atol=0, msg=str(fmt))
        for fmt in ('NHWC', Format.NHWC, 'NCL', Format.NCL, 'NTHWC'):
            with pytest.raises(ValueError, match='output_fmt'):
                get(fmt)
    assert all(info['output_fmt'] == 'NCTHW' for info in model.feature_info)


def _set_fused_attn(model, fused):
    for module in model.modules():
        if hasattr(module, 'fused_attn'):
            module.fused_attn = fused


def _create_fx_model(model, train=False):
    """timm's tests/test_models.py helper: trace with timm's leaf modules / not-traced functions, return the output."""
    from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes, train_return_nodes = [eval_nodes[-1]], [train_nodes[-1]]
    if train:
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        train_return_nodes = [train_nodes[-graph_node_names.index(name)] for name in output_node_names]
    return create_feature_extractor(
        model, train_return_nodes=train_return_nodes, eval_return_nodes=eval_return_nodes, tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_model_forward_fx(model_name):
    model = timm.create_model(model_name, **small(model_name)).eval()
    x = clip_for(model)
    with torch.inference_mode():
        outputs = model(x)
        fx_outputs = torch.cat(tuple(_create_fx_model(model)(x).values()))
    assert torch.all(fx_outputs == outputs)  # timm's check: the traced graph computes exactly the same
    assert outputs.shape[0] == 1 and not torch.isnan(outputs).any()


@pytest.mark.parametrize('model_name', MODEL_NAMES)
def test_model_backward_fx(model_name):
    model = timm.create_model(model_name, num_classes=42, **small(model_name)).train()
    num_params = sum(p.numel() for p in model.parameters())
    fx_model = _create_fx_model(model, train=True)
    outputs = torch.cat(tuple(fx_model(clip_for(model, batch_size=2)).values()))
    outputs.mean().backward()
    for name, p in fx_model.named_parameters():
        assert p.grad is not None, f'No gradient for {name}'
    assert outputs.shape[-1] == 42
    assert num_params == sum(p.grad.numel() for p in fx_model.parameters() if p.grad is not None)


def test_fx_features_equal_the_getter_features():
    """feature_cls='fx' returns the blocks' own (B, T', H', W', C) outputs; the getter returns them as NCTHW."""
    torch.manual_seed(0)
    getter = timm.create_model('logoformer_tiny', features_only=True, **SMALL).eval()
    torch.manual_seed(0)  # the same weights
    fx = timm.create_model('logoformer_tiny', features_only=True, feature_cls='fx', **SMALL).eval()
    x = torch.rand(2, 3, 4, 64, 64)
    with torch.no_grad():
        maps, blocks = getter(x), fx(x)
    assert fx.feature_info.channels() == getter.feature_info.channels()
    assert len(maps) == len(blocks) == 2
    for m, b in zip(maps, blocks):
        torch.testing.assert_close(b.permute(0, 4, 1, 2, 3), m, rtol=1e-5, atol=1e-6)


def test_create_feature_extractor_on_block_outputs():
    from timm.models import create_feature_extractor
    model = timm.create_model('logoformer_tiny', **SMALL).eval()
    extractor = create_feature_extractor(model, {'blocks.0': 'first', 'blocks.1.local_attn': 'local', 'norm': 'norm'})
    x = torch.rand(1, 3, 4, 64, 64)
    with torch.no_grad():
        out = extractor(x)
        first = model.forward_intermediates(x, indices=[0], intermediates_only=True)[0]
        torch.testing.assert_close(out['first'].permute(0, 4, 1, 2, 3), first)
        torch.testing.assert_close(out['norm'].flatten(1, 3), model.forward_features(x))
    assert out['local'].shape == (1, 4, 4, 4, 256)


def explicit_attention_maps(module, tokens):
    """softmax(q k^T / sqrt(d)) written out: local maps per (window, head), global maps per head over summaries."""
    heads = module.num_heads
    b, t, h, w, c = tokens.shape
    d = c // heads
    if hasattr(module, 'qkv'):
        wt, wh, ww = module.window_size
        q, k, _ = module.qkv(tokens).split(c, dim=-1)
        windows = lambda z: z.reshape(b, t // wt, wt, h // wh, wh, w // ww, ww, heads, d).permute(
            0, 1, 3, 5, 7, 2, 4, 6, 8).reshape(b, -1, wt * wh * ww, d)  # (b, (windows heads), tokens, d)
        q, k = windows(q), windows(k)
    else:
        q = module.q(tokens).reshape(b, -1, heads, d).transpose(1, 2)
        k = module.kv(module.summarize(tokens))[..., :c].reshape(b, -1, heads, d).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / d ** 0.5, dim=-1)


@pytest.mark.parametrize('method', ['fx', 'hook'])
def test_attention_extract_returns_every_local_and_global_map(method):
    from timm.utils import AttentionExtract
    model = timm.create_model('logoformer_tiny', **SMALL).eval()
    _set_fused_attn(model, False)
    x = torch.rand(1, 3, 4, 64, 64)
    inputs = {}
    for name, module in model.named_modules():
        if name.endswith(('local_attn.attn', 'global_attn.attn')):
            module.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0]))
    extract = AttentionExtract(model, method=method)
    suffix = 'softmax' if method == 'fx' else 'attn_drop'
    expected = [f'blocks.{i}.{kind}_attn.attn.{suffix}' for i in range(2) for kind in ('local', 'global')]
    assert extract.names == expected
    with torch.no_grad():
        maps = extract(x)
        model(x)  # eagerly, so that the pre-hooks record each attention's input
        for name in expected:
            module_name = name.rsplit('.', 1)[0]
            reference = explicit_attention_maps(model.get_submodule(module_name), inputs[module_name])
            torch.testing.assert_close(maps[name], reference, rtol=1e-4, atol=1e-6)
    assert maps[expected[0]].shape == (1, 2 * 4, 32, 32)  # 2 windows x 4 heads, 2*4*4 tokens per window
    assert maps[expected[1]].shape == (1, 4, 64, 2)  # 4 heads, 64 tokens query 2 window summaries


def test_attention_extract_hook_under_no_grad_sees_whole_maps():
    """Hooks turn chunked inference off: at 16x224x224 (3136 tokens, chunked without hooks) the hook method under
    no_grad returns every local and global map, equal to the maps with autograd on (never chunked)."""
    from timm.utils import AttentionExtract
    model = timm.create_model('logoformer_tiny', num_frames=16, img_size=224).eval()
    _set_fused_attn(model, False)
    extract = AttentionExtract(model, method='hook')
    x = torch.rand(1, 3, 16, 224, 224)
    with torch.no_grad():
        maps = extract(x)
    reference = extract(x)
    assert maps.keys() == reference.keys() and len(maps) == 4
    for name, value in maps.items():
        torch.testing.assert_close(value, reference[name].detach(), rtol=1e-4, atol=1e-6, msg=name)
    assert maps['blocks.0.local_attn.attn.attn_drop'].shape == (1, 512, 32, 32)  # 8 x 4 x 4 windows x 4 heads
    assert maps['blocks.0.global_attn.attn.attn_drop'].shape == (1, 4, 3136, 128)  # 3136 tokens x 128 summaries


def test_stem_hook_sees_every_frame():
    """A forward hook on the stem (or inside it) sees every frame of the clip at eager inference."""
    model = timm.create_model('logoformer_tiny', num_frames=16, img_size=224).eval()
    seen = []
    handles = [model.stem.register_forward_hook(lambda mod, args, out: seen.append(('stem', out.shape))),
               model.stem.conv1.register_forward_hook(lambda mod, args, out: seen.append(('conv1', out.shape)))]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, 16, 224, 224))
    finally:
        for handle in handles:
            handle.remove()
    assert seen == [('conv1', (16, 64, 112, 112)), ('stem', (16, 256, 14, 14))]


def test_torch_compile_fullgraph():
    model = timm.create_model('logoformer_tiny', **SMALL).eval()
    x = torch.rand(1, 3, 4, 64, 64)
    compiled = torch.compile(model, backend='eager', fullgraph=True)  # raises on any graph break
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)


def test_channels_last_memory_format():
    model = timm.create_model('logoformer_tiny', **SMALL).eval()
    x = torch.rand(1, 3, 4, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        assert model.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    assert all(p.ndim <= 4 for p in model.parameters())  # no 5-D weights (DDP bucket strides, channels_last)


def test_ddp_single_process_has_no_grad_stride_warning(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try:
        model = DistributedDataParallel(timm.create_model('logoformer_tiny', **SMALL))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            model(torch.rand(2, 3, 4, 64, 64)).mean().backward()
    finally:
        dist.destroy_process_group()
    assert not [w for w in caught if 'stride' in str(w.message)], [str(w.message) for w in caught]


ARCHS = ('logoformer_tiny', 'logoformer_small', 'logoformer_base', 'former_dfer', 'mae_dfer', 'dfer_clip', 's2d')


def test_timm_lists_the_zoo_as_pretrained_and_says_where_its_files_are():
    """The authors' releases are listed by timm's own discovery (the user downloads the file from the cfg's page);
    names without weights are not, and pretrained=True without the file raises naming the page."""
    from logoformer_timm.models import REPORTED_RESULTS, PretrainedWeightsUnavailableError
    assert len(REPORTED_RESULTS) >= 16
    zoo = ('*dfer*', 's2d*')
    assert set(timm.list_pretrained(zoo)) == set(REPORTED_RESULTS) == set(timm.list_models(zoo, pretrained=True))
    assert timm.list_pretrained('logoformer_*') == []  # no LOGO-Former weights are published
    for name in REPORTED_RESULTS:
        page = timm.models.get_pretrained_cfg(name).origin_url
        with pytest.raises(PretrainedWeightsUnavailableError, match=re.escape(page)):
            timm.create_model(name, pretrained=True)


@pytest.mark.parametrize('arch', ARCHS)
def test_every_cfg_carries_the_frame_count(arch):
    model = timm.create_model(arch, **cheap(arch))
    assert model.pretrained_cfg['num_frames'] == model.num_frames == 16
    for name in timm.list_models(arch, include_tags=True):
        assert timm.models.get_pretrained_cfg(name).num_frames == model.num_frames, name
    other = timm.create_model(arch, **small(arch))  # the cfg describes the source clip, as its input_size does
    assert other.pretrained_cfg['num_frames'] == 16 and other.num_frames == small(arch)['num_frames']


@pytest.mark.parametrize('arch', ARCHS)
def test_fixed_input_size_is_the_instances_as_timm_reads_it(arch):
    """timm's cfg flag says the model takes img_size (built for one size); whether an instance is fixed is timm's
    get_model_input_config: fixed unless built with dynamic_img_size=True (LOGO-Former, Former-DFER), which then
    takes another clip."""
    fixed = timm.create_model(arch, **small(arch))
    assert fixed.pretrained_cfg['fixed_input_size'] is True
    assert timm.models.get_model_input_config(fixed)['fixed_input_size'] is True
    if arch in ('mae_dfer', 'dfer_clip', 's2d'):  # no dynamic_img_size: build them for another clip
        return
    flexible = timm.create_model(arch, dynamic_img_size=True, **small(arch)).eval()
    assert timm.models.get_model_input_config(flexible)['fixed_input_size'] is False
    t, size = small(arch)['num_frames'], small(arch)['img_size']
    with torch.no_grad():
        assert flexible(torch.rand(1, 3, 2 * t, 2 * size, 2 * size)).shape == (1, flexible.num_classes)


@pytest.mark.parametrize('arch', ARCHS)
def test_timm_resolve_data_config_describes_one_frame_of_the_clip(arch):
    """timm's resolve_data_config gives one frame's (C, H, W) and transform; resolve_video_data_config the clip:
    the same frame size, frame count from the cfg, and every shared setting equal."""
    from logoformer_timm import resolve_video_data_config
    model = timm.create_model(arch, **cheap(arch))
    image, clip = timm.data.resolve_data_config({}, model=model), resolve_video_data_config(model)
    c, t, h, w = clip['input_size']
    assert image['input_size'] == (c, h, w) and t == model.pretrained_cfg['num_frames']
    assert {k: v for k, v in image.items() if k != 'input_size'} == {k: clip[k] for k in image if k != 'input_size'}
