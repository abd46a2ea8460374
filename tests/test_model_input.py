"""Bad clips, bad constructor arguments and unloaded weights fail or warn clearly (each was silent or raw before)."""
import warnings

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg

import logoformer_timm  # noqa: F401 (registers the models)
from logoformer_timm.models import list_clip_models
from test_timm_contract import small

SMALL = dict(num_frames=4, img_size=32)


def tiny(**kwargs):
    return timm.create_model('logoformer_tiny', **{**SMALL, **kwargs}).eval()


@pytest.mark.parametrize('dtype', [torch.uint8, torch.int64, torch.bool])
def test_integer_clip_names_dtype_and_fix(dtype):
    with pytest.raises(TypeError, match=rf'dtype {dtype}.*clip.float\(\) / 255'):
        tiny()(torch.zeros(1, 3, 4, 32, 32, dtype=dtype))


@pytest.mark.parametrize('name', list_clip_models())
def test_a_list_or_numpy_clip_names_the_conversion(name):
    # every model used to raise AttributeError ('list' object has no attribute 'ndim')
    model = timm.create_model(name, **small(name)).eval()
    shape = (1, 3, model.num_frames, *model.img_size)
    if model.input_layout == 'BTCHW':
        shape = (1, model.num_frames, 3, *model.img_size)
    clip = torch.rand(shape)
    with pytest.raises(TypeError, match=r'expects a torch\.Tensor clip, got a builtins\.list: convert it with '
                                        r'torch\.tensor\(x\)'):
        model(clip.tolist())
    with pytest.raises(TypeError, match=r'got a numpy\.ndarray: convert it with torch\.from_numpy\(x\)'):
        model(clip.numpy())


def test_float64_clip_names_both_fixes():
    with pytest.raises(TypeError, match=r'torch.float64 but the model is torch.float32.*model.to\(torch.float64\)'):
        tiny()(torch.rand(1, 3, 4, 32, 32, dtype=torch.float64))
    model = tiny().double()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 4, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_bf16_autocast_with_float32_clip_is_valid():
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert tiny()(torch.rand(1, 3, 4, 32, 32)).dtype == torch.bfloat16


def test_0_255_clip_warns_once_per_model():
    model = tiny()
    with pytest.warns(UserWarning, match=r'\[0, 1\].*divide the clip by 255'), torch.no_grad():
        model(torch.rand(1, 3, 4, 32, 32) * 255)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with torch.no_grad():
            model(torch.rand(1, 3, 4, 32, 32) * 255)  # once per model
            tiny()(torch.rand(1, 3, 4, 32, 32))  # [0, 1] never warns


def test_zero_resolution_with_dynamic_img_size():
    with pytest.raises(ValueError, match='0x0 is smaller than the stem stride 16'):
        tiny(dynamic_img_size=True)(torch.rand(1, 3, 4, 0, 0))


@pytest.mark.parametrize('kwargs,match', [
    (dict(local_window=(2, 4.5, 4)), 'local_window must be a positive int'),
    (dict(local_window='244'), 'local_window must be a positive int'),
    (dict(global_pool_size=(2, 1)), 'global_pool_size must be'),
    (dict(num_classes=-1), 'num_classes must be an int >= 0'),
    (dict(depth=0), 'depth must be an int >= 1'),
    (dict(num_heads=0), 'num_heads must be an int >= 1'),
    (dict(embed_dim=-4), 'embed_dim must be an int >= 1'),
    (dict(in_chans=0), 'in_chans must be an int >= 1'),
    (dict(num_frames=0), 'num_frames must be an int from 1 to 1024'),
    (dict(num_frames=1e6), 'num_frames must be an int from 1 to 1024'),
    (dict(img_size=0), 'img_size must be an int from 16 to 4096'),
    (dict(img_size=1_000_000), 'img_size must be an int from 16 to 4096'),
    (dict(img_size=(112, 112, 3)), r'img_size must be an int or \(H, W\)'),
])
def test_bad_constructor_arguments_are_clear_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model('logoformer_tiny', device='meta', **kwargs)


def test_reset_classifier_rejects_negative_classes():
    with pytest.raises(ValueError, match='num_classes'):
        tiny().reset_classifier(-1)


def test_old_dynamic_size_name_raises_naming_the_new_one():
    with pytest.raises(TypeError, match='dynamic_size was renamed dynamic_img_size'):
        timm.create_model('logoformer_tiny', dynamic_size=True)


def test_local_window_larger_than_grid_is_clamped_with_identical_outputs():
    from logoformer_timm.layers import WindowAttention3d
    torch.manual_seed(0)
    big = WindowAttention3d(16, 2, window_size=(8, 8, 8)).eval()
    exact = WindowAttention3d(16, 2, window_size=(2, 3, 3)).eval()
    exact.load_state_dict(big.state_dict())
    x = torch.randn(1, 2, 3, 3, 16)
    calls = []
    import torch.nn.functional as F
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, 'pad', lambda *a, **k: calls.append(1) or torch.constant_pad_nd(*a[:2]))
        torch.testing.assert_close(big(x), exact(x), rtol=0, atol=0)
    assert not calls  # the clamped window needs no padding


def test_stem_weights_with_pretrained_is_refused_before_reading(tmp_path):
    path = tmp_path / 'not_read.pth'
    with pytest.raises(ValueError, match='stem_weights cannot be combined with pretrained=True'):
        timm.create_model('logoformer_tiny', pretrained=True, stem_weights=str(path),
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'model.safetensors')))


def test_local_dir_without_pretrained_warns_and_plain_name_does_not(tmp_path):
    from timm.models import save_for_hf
    save_for_hf(tiny(), tmp_path, safe_serialization=True)
    with pytest.warns(UserWarning, match=r'random weights.*Pass pretrained=True'):
        timm.create_model(f'local-dir:{tmp_path}')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
        timm.create_model('logoformer_tiny', device='meta')


def test_unavailable_weights_message_says_pretrained_true():
    from logoformer_timm import PretrainedWeightsUnavailableError
    with pytest.raises(PretrainedWeightsUnavailableError, match=r"'local-dir:path/to/folder', pretrained=True\)"):
        timm.create_model('logoformer_base', pretrained=True)


def test_default_cfg_pool_size_is_the_token_grid():
    for name in timm.list_models('logoformer_*'):
        assert get_pretrained_cfg(name).pool_size == (16, 7, 7)


def _config_folder(folder, **model_args):
    from timm.models import save_for_hf
    save_for_hf(tiny(), folder, model_args=model_args, safe_serialization=True)
    return folder


@pytest.mark.parametrize('pretrained', [False, True])
def test_a_config_json_never_names_a_stem_file_to_read(tmp_path, monkeypatch, pretrained):
    from logoformer_timm.weights.verify import seed_hf_cache
    from logoformer_timm.layers import FrameStem
    monkeypatch.setattr(FrameStem, 'load_resnet_weights', lambda *a: pytest.fail('a stem file was read'))
    folder = _config_folder(tmp_path / 'repo', stem_weights=str(tmp_path / 'secret.pth'))
    seed_hf_cache(tmp_path / 'cache', 'someone/model', folder)
    for route, kwargs in ((f'local-dir:{folder}', {}), ('hf-hub:someone/model', dict(cache_dir=tmp_path / 'cache'))):
        with pytest.raises(ValueError, match='config.json sets model_args.stem_weights'), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # pretrained=False on a local-dir: warns about random weights
            timm.create_model(route, pretrained=pretrained, **kwargs)


def test_a_config_json_asking_for_a_million_frames_is_refused_before_allocating(tmp_path):
    folder = _config_folder(tmp_path / 'repo', num_frames=1e6)
    with pytest.raises(ValueError, match='num_frames must be an int from 1 to 1024'):
        timm.create_model(f'local-dir:{folder}', pretrained=True)
