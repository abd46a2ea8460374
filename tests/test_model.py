"""LogoFormer behaviour beyond timm's contract: layouts, batching, checkpointing, sizes, export, bad input."""
import math

import pytest
import timm
import torch
from safetensors.torch import save_file

from logoformer_timm import LogoFormer, PretrainedWeightsUnavailableError, resolve_video_data_config

SMALL = dict(num_frames=4, img_size=32)


def tiny(**kwargs):
    return timm.create_model('logoformer_tiny', **{**SMALL, **kwargs})


def test_input_layouts_give_identical_outputs():
    bcthw = tiny().eval()
    btchw = tiny(input_layout='BTCHW').eval()
    btchw.load_state_dict(bcthw.state_dict())
    x = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bcthw(x), btchw(x.transpose(1, 2).contiguous()), rtol=0, atol=0)


def test_sample_alone_equals_sample_in_batch():
    model = tiny().eval()
    x = torch.rand(3, 3, 4, 32, 32)
    with torch.no_grad():
        batched = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_same_outputs_and_grads():
    ref = tiny(drop_path_rate=0.).train()
    ckpt = tiny().train()
    ckpt.load_state_dict(ref.state_dict())
    ckpt.set_grad_checkpointing(True)
    x = torch.rand(2, 3, 4, 32, 32)
    out_ref, out_ckpt = ref(x), ckpt(x)
    torch.testing.assert_close(out_ref, out_ckpt)
    out_ref.square().sum().backward()
    out_ckpt.square().sum().backward()
    for (name, p_ref), p_ckpt in zip(ref.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p_ref.grad, p_ckpt.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize('frames,size', [(8, 112), (32, 112), (16, 160), (16, 224)])
def test_other_frame_counts_and_resolutions(frames, size):
    x = torch.rand(1, 3, frames, size, size)
    built = timm.create_model('logoformer_tiny', num_frames=frames, img_size=size).eval()
    dynamic = timm.create_model('logoformer_tiny', dynamic_img_size=True).eval()
    with torch.no_grad():
        assert built(x).shape == (1, 7)
        assert dynamic(x).shape == (1, 7)
        _, maps = built.forward_intermediates(x, indices=1)
    assert maps[0].shape == (1, 256, frames, size // 16, size // 16)


def test_dynamic_img_size_matches_model_built_with_resampled_embeddings():
    """On-the-fly resampling equals building for the new size and resampling the checkpoint once."""
    src = timm.create_model('logoformer_tiny', dynamic_img_size=True).eval()
    dst = timm.create_model('logoformer_tiny', num_frames=8, img_size=160).eval()
    from logoformer_timm import checkpoint_filter_fn
    dst.load_state_dict(checkpoint_filter_fn(src.state_dict(), dst))
    assert dst.pos_embed_spatial.shape == (1, 10, 10, 256) and dst.pos_embed_temporal.shape == (1, 8, 256)
    x = torch.rand(1, 3, 8, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(src(x), dst(x), rtol=1e-5, atol=1e-5)


def test_non_dividing_grid_with_odd_frames():
    """7 frames at 48x48 (a 3x3 map) pads every window dim; outputs stay finite and batch-independent."""
    model = timm.create_model('logoformer_tiny', num_frames=7, img_size=48).eval()
    x = torch.rand(2, 3, 7, 48, 48)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out[1:], model(x[1:]), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('block_types', ['joint', ('local',), ('global',), ('global', 'local'), 'local,global'])
def test_block_type_ablations(block_types):
    model = tiny(block_types=block_types).eval()
    kinds = (block_types,) if block_types == 'joint' else tuple(block_types.split(',')) if isinstance(
        block_types, str) else block_types
    assert model.blocks[0].attn_names == tuple(f'{k}_attn' for k in kinds)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 4, 32, 32)).shape == (1, 7)


def test_joint_block_attends_across_the_whole_clip():
    """Changing the last frame changes the first token's output after one joint block, but not after local."""
    x = torch.rand(1, 3, 4, 64, 64)
    y = x.clone()
    y[:, :, -1] = torch.rand_like(y[:, :, -1])
    for kind, should_change in (('joint', True), (('local',), False)):
        model = timm.create_model('logoformer_tiny', num_frames=4, img_size=64, depth=1, block_types=kind).eval()
        with torch.no_grad():
            fx = model.forward_intermediates(x, output_fmt='NCTHW', intermediates_only=True)[0]
            fy = model.forward_intermediates(y, output_fmt='NCTHW', intermediates_only=True)[0]
        changed = not torch.allclose(fx[:, :, 0], fy[:, :, 0])
        assert changed == should_change, kind


def test_global_pool_none_gives_token_outputs():
    model = tiny(global_pool='').eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 4, 32, 32))
    assert out.shape == (2, 4 * 2 * 2, 7)
    model.reset_classifier(3, 'avg')
    with torch.no_grad():
        assert model(torch.rand(2, 3, 4, 32, 32)).shape == (2, 3)


def test_torch_export_tiny():
    model = timm.create_model('logoformer_tiny').eval()
    x = torch.rand(1, 3, 16, 112, 112)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_cpu_tiny():
    model = timm.create_model('logoformer_tiny').eval()
    x = torch.rand(1, 3, 16, 112, 112)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 7)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)


@pytest.mark.parametrize('shape,match', [
    ((3, 4, 32, 32), r'5-D clip tensor.*unsqueeze\(0\)'),
    ((1, 1, 3, 4, 32, 32), '5-D clip tensor'),
    ((1, 1, 4, 32, 32), 'Expected 3 channels.*in_chans=1'),
    ((1, 4, 3, 32, 32), "looks like BTCHW: pass input_layout='BTCHW'"),
    ((0, 3, 4, 32, 32), 'Empty batch'),
    ((1, 3, 4, 40, 40), 'not divisible by the stem stride 16'),
    ((1, 3, 8, 32, 32), r'built for 4 frames at 32x32, got 8 frames.*dynamic_img_size=True'),
    ((1, 3, 4, 48, 48), r'img_size=\(48, 48\)'),
    ((1, 3, 0, 32, 32), 'at least one frame'),
])
def test_bad_input_raises_clear_value_error(shape, match):
    model = tiny().eval()
    with pytest.raises(ValueError, match=match):
        model(torch.rand(*shape))


def test_bad_constructor_arguments():
    with pytest.raises(TypeError):
        timm.create_model('logoformer_tiny', no_such_arg=1)
    with pytest.raises(ValueError, match='block_types'):
        tiny(block_types=('local', 'spatial'))
    with pytest.raises(ValueError, match='block_types'):
        tiny(block_types=('local', 'local'))
    with pytest.raises(ValueError, match='input_layout'):
        tiny(input_layout='BHWCT')
    with pytest.raises(ValueError, match='multiple of the stem stride'):
        tiny(img_size=100)
    with pytest.raises(ValueError, match='divisible by num_heads'):
        tiny(num_heads=3)
    with pytest.raises(RuntimeError, match='Unknown model'):
        timm.create_model('logoformer_huge')


def test_pretrained_without_published_weights_raises_with_fix():
    with pytest.raises(PretrainedWeightsUnavailableError, match=r"No pretrained weights are published.*pretrained_cfg_overlay=dict\(file="):
        timm.create_model('logoformer_base', pretrained=True)


def test_pretrained_from_local_file_loads_the_weights(tmp_path):
    src = tiny()
    path = tmp_path / 'model.safetensors'
    save_file(src.state_dict(), path)
    loaded = tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for key, value in src.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def test_stem_weights_from_a_resnet18_file(tmp_path):
    resnet = timm.create_model('resnet18', num_classes=0)
    torch.nn.init.normal_(resnet.layer3[1].conv2.weight)  # make the check independent of init
    path = tmp_path / 'resnet18.safetensors'
    save_file(resnet.state_dict(), path)
    model = tiny(stem_weights=str(path))
    for key, value in model.stem.state_dict().items():
        torch.testing.assert_close(value, resnet.state_dict()[key], msg=key)
    # the stem computes ResNet-18 up to layer3
    model.eval(), resnet.eval()
    frames = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = resnet.forward_intermediates(frames, indices=[3], intermediates_only=True)[0]
        torch.testing.assert_close(model.stem(frames), ref)


def test_stem_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='stem_weights file not found'):
        tiny(stem_weights=str(tmp_path / 'missing.safetensors'))
    path = tmp_path / 'other.safetensors'
    save_file(timm.create_model('resnet34', num_classes=0).state_dict(), path)
    with pytest.raises(ValueError, match='not a ResNet-18 checkpoint'):
        tiny(stem_weights=str(path))


def test_constructor_matches_architecture_defaults():
    model = LogoFormer()
    assert model.local_window == model.global_pool_size == (2, 4, 4)
    assert model.block_types == ('local', 'global')
    assert model.grid_size == (16, 7, 7)
    assert model.blocks[0].mlp.fc1.out_features == 4 * 512
    assert model.blocks[0].local_attn.attn.qkv.bias is None
    assert model.blocks[0].local_attn.attn.proj.bias is not None
    custom = LogoFormer(global_pool_size=(2, 1, 1), local_window=4)
    assert custom.global_pool_size == (2, 1, 1) and custom.local_window == (4, 4, 4)


def test_resolve_video_data_config():
    cfg = resolve_video_data_config(timm.create_model('logoformer_small', num_frames=8, input_layout='BTCHW'))
    assert cfg['input_size'] == (3, 8, 112, 112)
    assert cfg['input_layout'] == 'BTCHW'
    assert cfg['mean'] == (0., 0., 0.) and cfg['std'] == (1., 1., 1.)
    assert 'label_names' not in cfg  # data keys only: the names stay in model.pretrained_cfg


def test_set_input_size_resamples_in_place_like_a_model_built_for_it():
    from logoformer_timm import checkpoint_filter_fn
    model = tiny()
    built = tiny(num_frames=8, img_size=64)
    built.load_state_dict(checkpoint_filter_fn(model.state_dict(), built))
    model.set_input_size(img_size=64, num_frames=8)
    assert (model.img_size, model.num_frames, model.grid_size) == ((64, 64), 8, (8, 4, 4))
    assert model._traits['img_size'] == (64, 64) and model._model_args['num_frames'] == 8
    x = torch.rand(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), built(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match='num_frames'):
        model.set_input_size(num_frames=0)


def test_dynamic_img_size_is_not_fixed_size_in_traits_and_saved_config(tmp_path):
    import json
    from timm.models import save_for_hf
    model = tiny(dynamic_img_size=True)
    assert model._traits['fixed_input_size'] is False and tiny()._traits['fixed_input_size'] is True
    save_for_hf(model, tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['pretrained_cfg']['fixed_input_size'] is False
    loaded = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    assert loaded.dynamic_img_size and loaded._traits['fixed_input_size'] is False
    with torch.no_grad():
        assert loaded(torch.rand(1, 3, 6, 48, 48)).shape == (1, 7)


def test_torch_export_dynamic_img_size_serves_native_and_other_sizes():
    """One exported graph (dynamic T/H/W) serves 16x112x112 and other sizes with the eager logits."""
    model = timm.create_model('logoformer_tiny', dynamic_img_size=True).eval()
    auto = torch.export.Dim.AUTO
    exported = torch.export.export(
        model, (torch.rand(1, 3, 16, 112, 112),), dynamic_shapes=({2: auto, 3: auto, 4: auto},)).module()
    for frames, height, width in ((16, 112, 112), (6, 80, 112), (16, 96, 80)):
        x = torch.rand(1, 3, frames, height, width)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-5)


def test_set_input_size_saves_with_safetensors_and_save_for_hf(tmp_path):
    """After set_input_size the resampled position embeddings are contiguous: safetensors and save_for_hf save them."""
    from safetensors.torch import load_file
    from timm.models import save_for_hf
    model = tiny()
    model.set_input_size(img_size=64, num_frames=8)
    assert all(t.is_contiguous() for t in model.state_dict().values())
    save_file(model.state_dict(), tmp_path / 'model.safetensors')
    save_for_hf(model, tmp_path / 'hf', safe_serialization=True)
    for path in (tmp_path / 'model.safetensors', tmp_path / 'hf' / 'model.safetensors'):
        loaded = load_file(path)
        torch.testing.assert_close(loaded['pos_embed_temporal'], model.pos_embed_temporal.detach(), rtol=0, atol=0)
        assert loaded['pos_embed_spatial'].shape == (1, 4, 4, 256)


def _tensor_stats(model):
    return {k: (v.float().mean().item(), v.float().std().item() if v.numel() > 1 else 0., v.numel())
            for k, v in model.state_dict().items()}


@pytest.mark.parametrize('name', ['logoformer_tiny', 'logoformer_base'])
def test_meta_device_build_then_init_weights_initialises_every_tensor(name):
    """FSDP-style: build on meta, to_empty(), init_weights(): every parameter and buffer is initialised as a fresh CPU
    build's (compared by per-tensor statistics, not values), and a training step is finite."""
    kwargs = dict(SMALL, drop_path_rate=0.1)
    torch.manual_seed(0)
    reference = _tensor_stats(timm.create_model(name, **kwargs))
    model = timm.create_model(name, device='meta', **kwargs).to_empty(device='cpu')
    with torch.no_grad():  # to_empty leaves memory as it was: make every left-over visible
        for tensor in model.state_dict().values():
            tensor.fill_(float('nan') if tensor.is_floating_point() else 12345)
    model.init_weights()
    stats = _tensor_stats(model)
    assert stats.keys() == reference.keys()
    for key, (mean, std, numel) in stats.items():
        ref_mean, ref_std, _ = reference[key]
        assert math.isfinite(mean) and math.isfinite(std), f'{key} left uninitialised'
        if ref_std == 0:  # constants: zeros, ones, running statistics, num_batches_tracked
            assert (mean, std) == (ref_mean, 0.), key
        else:
            assert abs(std / ref_std - 1) < 0.2 + 3 / numel ** 0.5, (key, std, ref_std)  # wider for few values
            assert abs(mean - ref_mean) < 4 * ref_std / numel ** 0.5 + 1e-6, (key, mean, ref_mean)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.rand(2, 3, 4, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


def test_linear_weights_are_not_copied_per_grid_row():
    """Under bf16 autocast every Linear of logoformer_base at 16x112 multiplies its input as one (tokens, C) matrix:
    no aten::copy_ or bmm of a (rows, a, b) tensor holding a Linear weight (a, b) once per grid row, and no
    allocation as large as the smallest Linear weight times the 16 x 7 (frames x rows) grid rows. A strided view fed to
    a Linear (a cropped grid, a permuted map) makes matmul broadcast the weight and multiply row by row."""
    from torch.profiler import ProfilerActivity, profile
    model = timm.create_model('logoformer_base').eval()  # 16x112: a 16 x 7 x 7 token grid, padded windows
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features > 7]
    weight_shapes = {s for m in linears for s in (tuple(m.weight.shape), tuple(m.weight.shape[::-1]))}
    rows_times_weight = 16 * 7 * min(m.weight.numel() for m in linears) * 2  # bf16: 29 MB
    x = torch.rand(1, 3, 16, 112, 112)
    with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16), profile(
            activities=[ProfilerActivity.CPU], record_shapes=True, profile_memory=True) as prof:
        model(x)
    broadcast = [
        (e.name, shape) for e in prof.events() if e.name in ('aten::copy_', 'aten::bmm')
        for shape in map(tuple, e.input_shapes or ())
        if len(shape) == 3 and shape[0] > 1 and shape[1:] in weight_shapes]
    assert not broadcast
    largest = max(e.cpu_memory_usage for e in prof.events() if e.name.startswith('aten::empty'))
    assert 0 < largest < rows_times_weight, (largest, rows_times_weight)
