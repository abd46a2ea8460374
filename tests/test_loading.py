"""Every timm route to LOGO-Former weights, offline (HF_HUB_OFFLINE=1 from conftest), on weights made here.

Routes: ``pretrained_cfg_overlay=dict(file=...)`` (safetensors and weights-only .pth), a manifest tag through a
seeded Hugging Face cache, ``hf-hub:`` and ``local-dir:``. References are the source tensors themselves, timm's
own exporter (``save_for_hf``) and hand-written formulas for the adaptations.
"""
import hashlib
import logging
import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import save_for_hf

from logoformer_timm.weights import manifest
from logoformer_timm.weights.verify import seed_hf_cache
from logoformer_timm.weights.manifest import PublishedWeights, WeightsChecksumError
from logoformer_timm.models import PretrainedWeightsError, PretrainedWeightsUnavailableError, refresh_pretrained_cfgs

SMALL = dict(num_frames=4, img_size=32)
CLIP = torch.rand(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def tiny(**kwargs):
    return timm.create_model('logoformer_tiny', **{**SMALL, **kwargs}).eval()


def logits(model, clip=CLIP):
    with torch.no_grad():
        return model(clip)


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(1)
    return tiny()


@pytest.fixture(scope='module')
def weights_file(source, tmp_path_factory):
    path = tmp_path_factory.mktemp('weights') / 'model.safetensors'
    save_file(source.state_dict(), path)
    return path


def assert_same_weights(model, reference, skip=()):
    for key, value in reference.state_dict().items():
        if key not in skip:
            assert torch.equal(model.state_dict()[key], value), key


def test_file_overlay_safetensors_loads_exactly(source, weights_file):
    model = tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights_file)))
    assert_same_weights(model, source)
    assert torch.equal(logits(model), logits(source))
    assert 'state_dict' not in model.pretrained_cfg


def test_pth_container_takes_the_model_entry_and_strips_wrapper_prefixes(source, tmp_path):
    """The model entry, as timm's validate.py without --use-ema; checkpoint_entry takes the EMA (every route:
    tests/test_checkpoint_entry.py)."""
    other = tiny()
    ema = {f'module._orig_mod.{k}': v for k, v in source.state_dict().items()}
    path = tmp_path / 'checkpoint.pth'
    torch.save({'epoch': 7, 'state_dict': other.state_dict(), 'state_dict_ema': ema}, path)
    assert_same_weights(tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(path))), other)
    model = tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(path), checkpoint_entry='state_dict_ema'))
    assert_same_weights(model, source)


class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_PATH'], 'w').write('x')",))


def test_pth_is_never_unpickled_beyond_tensors(tmp_path, monkeypatch):
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('PWNED_PATH', str(marker))
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': {'x': _Payload()}}, f, protocol=2)
    with pytest.raises(PretrainedWeightsError, match='evil.pth'):
        tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert not marker.exists()


class RecorderMeter:  # the shape of a training script's helper class, pickled under its '__main__' name
    def __init__(self):
        import numpy as np
        self.total_epoch, self.current_epoch = 2, 2
        self.epoch_losses = np.ones((2, 2), dtype=np.float32)


def test_released_checkpoint_objects_load_as_inert_stand_ins(source, tmp_path, monkeypatch):
    import argparse
    from logoformer_timm.weights.files import PickledObject, read_checkpoint
    path = tmp_path / 'released.pth'
    recorder = RecorderMeter()
    monkeypatch.setattr(RecorderMeter, '__module__', '__main__')
    monkeypatch.setattr(__import__('sys').modules['__main__'], 'RecorderMeter', RecorderMeter, raising=False)
    torch.save({'state_dict': {f'module.{k}': v for k, v in source.state_dict().items()}, 'recorder': recorder,
                'args': argparse.Namespace(model='vit', lg_region_size=(2, 5, 10)), 'best_acc': torch.tensor(65.7)},
               path)
    checkpoint = read_checkpoint(path)
    assert isinstance(checkpoint['recorder'], PickledObject) and not isinstance(checkpoint['recorder'], RecorderMeter)
    assert checkpoint['recorder'].pickled_name == '__main__.RecorderMeter'
    assert isinstance(checkpoint['recorder'].state['epoch_losses'], PickledObject)  # numpy never runs
    assert checkpoint['args'].state == {'model': 'vit', 'lg_region_size': (2, 5, 10)}
    model = tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert_same_weights(model, source)


@pytest.mark.parametrize('entry', ['recorder', 'args', 'optimizer'])
def test_a_payload_in_any_entry_never_runs_and_is_named(tmp_path, monkeypatch, entry):
    from logoformer_timm.weights.files import WeightsFileError, read_checkpoint
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('PWNED_PATH', str(marker))
    path = tmp_path / 'evil.pth'
    checkpoint = {'state_dict': {'x': torch.zeros(1)}, 'recorder': None, 'args': None, 'optimizer': {}}
    checkpoint[entry] = {'state': _Payload()} if entry == 'optimizer' else _Payload()
    torch.save(checkpoint, path)
    with pytest.raises(WeightsFileError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert '\n' not in message and 'builtins.exec' in message and 'allow-list' in message and 'evil.pth' in message
    assert not marker.exists()


def test_pos_embeds_resampled_for_other_frames_and_size(source, weights_file):
    model = tiny(pretrained=True, num_frames=2, img_size=64, pretrained_cfg_overlay=dict(file=str(weights_file)))
    # linear, align_corners=False, 4 -> 2 frames: each new frame sits halfway between two old ones
    t = source.pos_embed_temporal
    torch.testing.assert_close(model.pos_embed_temporal, (t[:, 0::2] + t[:, 1::2]) / 2)
    assert model.pos_embed_spatial.shape == (1, 4, 4, 256)
    assert_same_weights(model, source, skip=('pos_embed_temporal', 'pos_embed_spatial'))
    assert logits(model, torch.rand(1, 3, 2, 64, 64)).shape == (1, 7)


def test_stem_adapted_to_in_chans_by_our_filter(source, weights_file, caplog):
    with caplog.at_level(logging.INFO, logger='timm'):
        model = tiny(pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=str(weights_file)))
    # grey = r + g + b, so the summed kernel gives the RGB model's response to a grey clip
    torch.testing.assert_close(model.stem.conv1.weight, source.stem.conv1.weight.sum(1, keepdim=True))
    assert_same_weights(model, source, skip=('stem.conv1.weight',))
    assert not [r for r in caplog.records if 'conv1' in r.getMessage()]  # timm's own stem adaptation stayed off
    assert model._traits['first_conv'] == 'stem.conv1'
    grey = torch.rand(1, 1, 4, 32, 32)
    torch.testing.assert_close(logits(model, grey), logits(source, grey.expand(-1, 3, -1, -1, -1)), rtol=1e-4, atol=1e-4)


def test_other_num_classes_gets_a_fresh_head(source, weights_file):
    model = tiny(pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(file=str(weights_file)))
    assert model.head.weight.shape == (3, 256)
    assert_same_weights(model, source, skip=('head.weight', 'head.bias'))


def test_features_only_loads_the_backbone(source, weights_file):
    features = tiny(pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(weights_file)))
    with torch.no_grad():
        maps = features(CLIP)
        _, expected = source.forward_intermediates(CLIP)
    for got, want in zip(maps, expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize('variant, num_classes, problem', [
    ('logoformer_small', 3, r'missing keys: blocks\.2\.'),  # a new head must not make timm load non-strictly
    ('logoformer_base', 7, r'shape mismatches: .*token_embed\.weight \(256, 256\) != \(512, 256\)'),
])
def test_weights_of_another_architecture_raise_listing_keys(weights_file, variant, num_classes, problem):
    with pytest.raises(PretrainedWeightsError, match=f'{weights_file}.*{problem}'):
        timm.create_model(variant, pretrained=True, num_classes=num_classes, **SMALL,
                          pretrained_cfg_overlay=dict(file=str(weights_file)))


def test_unexpected_keys_are_listed(source, tmp_path):
    path = tmp_path / 'extra.safetensors'
    save_file({**source.state_dict(), 'decoder.weight': torch.zeros(2)}, path)
    with pytest.raises(PretrainedWeightsError, match=r'extra\.safetensors.*unexpected keys: decoder\.weight'):
        tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.mark.parametrize('name', ['model.bin', 'MODEL.SAFETENSORS', 'weights'])
def test_safetensors_are_read_by_their_content_whatever_the_name(source, weights_file, tmp_path, name):
    # a valid safetensors file named .bin (or upper case) used to be refused as a corrupt torch file
    from logoformer_timm.weights.loading import create_model
    (tmp_path / name).write_bytes(weights_file.read_bytes())
    assert_same_weights(create_model('logoformer_tiny', str(tmp_path / name), **SMALL), source)


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_corrupt_safetensors_raise_naming_the_file(weights_file, tmp_path, damage):
    data = weights_file.read_bytes()
    path = tmp_path / f'{damage}.safetensors'
    path.write_bytes(data[:len(data) // 2] if damage == 'truncated' else b'\x00\x01not a safetensors file' * 10)
    with pytest.raises(PretrainedWeightsError, match=f'{damage}.safetensors'):
        tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_missing_file_and_unknown_tag_and_missing_config(tmp_path):
    with pytest.raises(PretrainedWeightsError, match='nothere.safetensors'):
        tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'nothere.safetensors')))
    with pytest.raises(RuntimeError, match=r'Invalid pretrained tag \(nope\) for logoformer_tiny'):
        timm.create_model('logoformer_tiny.nope', pretrained=True)
    with pytest.raises(FileNotFoundError, match='config.json'):
        timm.create_model(f'local-dir:{tmp_path}', pretrained=True)


@pytest.fixture(scope='module')
def timm_export(tmp_path_factory):
    """A folder written by timm's own save_for_hf, from a model with non-default architecture arguments."""
    torch.manual_seed(2)
    model = timm.create_model('logoformer_tiny', num_frames=2, img_size=32, local_window=(1, 2, 2), num_classes=5).eval()
    folder = tmp_path_factory.mktemp('timm_export')
    save_for_hf(model, folder, safe_serialization=True)
    return model, folder


def test_local_dir_and_hf_hub_routes_honour_config_model_args(timm_export, tmp_path):
    model, folder = timm_export
    clip = torch.rand(1, 3, 2, 32, 32)
    seed_hf_cache(tmp_path, 'logoformer-timm/some_export', folder)
    for loaded in (timm.create_model(f'local-dir:{folder}', pretrained=True),
                   timm.create_model('hf-hub:logoformer-timm/some_export', pretrained=True, cache_dir=tmp_path)):
        assert (loaded.num_frames, loaded.local_window, loaded.num_classes) == (2, (1, 2, 2), 5)
        assert torch.equal(logits(loaded.eval(), clip), logits(model, clip))


def test_hf_hub_route_fails_offline_when_not_cached(tmp_path):
    with pytest.raises(Exception, match='(?i)offline|local|cache'):
        timm.create_model('hf-hub:logoformer-timm/not_cached', pretrained=True, cache_dir=tmp_path)


@pytest.fixture
def publish(monkeypatch):
    """Add manifest entries for one test (as a maintainer would), re-register the cfgs, and undo it all afterwards."""
    def add(folder_file, tag='unit_test', sha256=None):
        entry = PublishedWeights(
            arch='logoformer_tiny', tag=tag, sha256=sha256 or hashlib.sha256(folder_file.read_bytes()).hexdigest(),
            dataset='synthetic', fold=None, uar=None, war=None, license='mit', recipe='tests/test_loading.py')
        monkeypatch.setitem(manifest.PUBLISHED, entry.name, entry)
        refresh_pretrained_cfgs()
        return entry
    yield add
    monkeypatch.undo()
    refresh_pretrained_cfgs()


def test_published_tag_loads_through_seeded_hub_cache(source, weights_file, tmp_path, publish):
    entry = publish(weights_file)
    seed_hf_cache(tmp_path, entry.hf_hub_id, weights_file.parent)
    assert timm.list_pretrained('logoformer_tiny*') == ['logoformer_tiny.unit_test']
    cfg = timm.models.get_pretrained_cfg('logoformer_tiny')  # the bare name resolves to the published tag
    assert (cfg.tag, cfg.hf_hub_id) == ('unit_test', 'logoformer-timm/logoformer_tiny.unit_test')
    for name in ('logoformer_tiny.unit_test', 'logoformer_tiny'):
        model = timm.create_model(name, pretrained=True, cache_dir=tmp_path, **SMALL).eval()
        assert_same_weights(model, source)
        assert torch.equal(logits(model), logits(source))


def test_published_tag_with_wrong_sha256_loads_nothing(weights_file, tmp_path, publish, monkeypatch):
    entry = publish(weights_file, sha256='0' * 64)
    snapshot = seed_hf_cache(tmp_path, entry.hf_hub_id, weights_file.parent)
    parsed = []
    monkeypatch.setattr(manifest, 'read_safetensors', lambda *a: parsed.append(a))
    with pytest.raises(WeightsChecksumError, match=f"{snapshot / 'model.safetensors'}.*expects 0000"):
        timm.create_model('logoformer_tiny.unit_test', pretrained=True, cache_dir=tmp_path, **SMALL)
    assert parsed == []  # the bytes were never deserialized


def test_unpublished_again_after_the_manifest_entry_is_removed(weights_file, publish):
    publish(weights_file)
    assert timm.list_pretrained('logoformer_tiny*')


def test_registry_is_back_to_no_published_weights():
    # runs after the test above: its fixture removed the entry
    assert manifest.PUBLISHED == {} and timm.list_pretrained('logoformer_*') == []
    assert timm.list_models('logoformer_*', include_tags=True) == ['logoformer_base', 'logoformer_small', 'logoformer_tiny']
    with pytest.raises(PretrainedWeightsUnavailableError):
        timm.create_model('logoformer_tiny', pretrained=True)


@pytest.mark.parametrize('spelling', [
    'hf-hub:logoformer-timm/logoformer_tiny.unit_test@{commit}',
    'hf-hub:logoformer-timm/logoformer_tiny.unit_test@main',
    'hf-hub:LogoFormer-TIMM/LOGOFORMER_TINY.unit_test',
])
def test_sha256_check_holds_for_any_revision_and_letter_case(
        source, weights_file, tmp_path, publish, monkeypatch, spelling):
    """Tampered bytes at another revision or spelling of a published repo are refused, never loaded."""
    entry = publish(weights_file)
    tampered = tmp_path / 'tampered'
    tampered.mkdir()
    torch.manual_seed(9)
    save_for_hf(tiny(), tampered, safe_serialization=True)
    commit = 'c' * 40
    repo = spelling.split(':', 1)[1].split('@', 1)[0]
    seed_hf_cache(tmp_path / 'cache', repo, tampered, commit)
    assert repo.lower() == entry.hf_hub_id.lower()
    with pytest.raises(WeightsChecksumError, match=f'expects {entry.sha256}'):
        timm.create_model(spelling.format(commit=commit), pretrained=True, cache_dir=tmp_path / 'cache')


@pytest.mark.parametrize('key, value, problem', [
    ('blocks.0.local_attn.attn.qkv.weight', float('nan'), 'NaN or Inf values in blocks.0.local_attn.attn.qkv.weight'),
    ('head.bias', float('inf'), 'NaN or Inf values in head.bias'),
    ('head.weight', 'int', r'integer tensors where the model has floating point ones: head.weight \(torch.int64\)'),
    # the imaginary part (NaN here) used to be dropped with only a torch warning
    ('head.bias', 'complex', r'tensors of a dtype weights are never read from: head.bias \(torch.complex64\); weights must be'),
    # used to crash check_weights: torch.isfinite has no float8 kernel
    ('norm.weight', 'float8', r'tensors of a dtype weights are never read from: norm.weight \(torch.float8_e4m3fn\)'),
])
def test_non_finite_integer_or_unsupported_dtype_weights_are_refused_on_every_route(
        source, tmp_path, key, value, problem):
    from logoformer_timm.weights.loading import create_model
    from logoformer_timm.weights.files import read_checkpoint
    from logoformer_timm.weights.files import WeightsFileError
    weights = dict(source.state_dict())
    if value == 'int':
        weights[key] = weights[key].round().long()
    elif value == 'complex':
        weights[key] = torch.complex(weights[key], torch.full_like(weights[key], float('nan')))
    elif value == 'float8':
        weights[key] = weights[key].to(torch.float8_e4m3fn)
    else:
        weights[key] = weights[key].clone()
        weights[key].view(-1)[0] = value
    save_for_hf(tiny(), tmp_path, safe_serialization=True)  # config.json of a local-dir folder
    save_file(weights, tmp_path / 'model.safetensors')
    torch.save({'state_dict': weights}, tmp_path / 'checkpoint.pth')
    assert any('num_batches_tracked' in k for k in weights)  # integer buffers of the model itself still load
    with pytest.raises(PretrainedWeightsError, match=problem):  # timm's file route (checkpoint_filter_fn)
        tiny(pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'model.safetensors')))
    with pytest.raises(PretrainedWeightsError, match=problem):  # timm's local-dir route
        timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    with pytest.raises(WeightsFileError, match=problem):  # the project's reader (eval, train, hub export)
        create_model('logoformer_tiny', str(tmp_path / 'checkpoint.pth'), **SMALL)
    if value != 'int':
        with pytest.raises(WeightsFileError, match=f'model.safetensors holds {problem}'):
            read_checkpoint(tmp_path / 'model.safetensors')


def test_published_weights_with_nan_are_refused(source, tmp_path, publish):
    from logoformer_timm.weights.files import WeightsFileError
    weights = dict(source.state_dict())
    weights['norm.weight'] = torch.full_like(weights['norm.weight'], float('nan'))
    save_for_hf(tiny(), tmp_path / 'repo', safe_serialization=True)
    save_file(weights, tmp_path / 'repo' / 'model.safetensors')
    entry = publish(tmp_path / 'repo' / 'model.safetensors')  # the manifest's sha256 matches: the NaN was published
    seed_hf_cache(tmp_path / 'cache', entry.hf_hub_id, tmp_path / 'repo')
    with pytest.raises(WeightsFileError, match='NaN or Inf values in norm.weight'):
        timm.create_model(entry.name, pretrained=True, cache_dir=tmp_path / 'cache', **SMALL)
