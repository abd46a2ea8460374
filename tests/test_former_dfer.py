"""Former-DFER: the official checkpoint as distributed loads through timm and gives the official code's logits.

``tests/data/former_dfer_official.json`` was recorded by running the official repository's model code (commit
named in the file) on weights and an input from ``tests/official_fill.py``. Here the official checkpoint
container is rebuilt from it (``main_DFEW.py``'s ``save_checkpoint``: DataParallel ``module.`` keys, a CUDA
``best_acc``, the SGD state, a pickled ``__main__.RecorderMeter`` with numpy arrays) and loaded the user's way.
"""
import zipfile

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from logoformer_timm.models import PretrainedWeightsError, PretrainedWeightsUnavailableError
from logoformer_timm.models.former_dfer import DOWNLOAD_PAGE
from logoformer_timm.models.released import REPORTED_RESULTS
from export_checks import assert_onnx_matches_eager
from official_files import (
    FORMER_DFER_RECORD, former_dfer_container, former_dfer_state_dict, save_as_training_script)
from official_fill import fixed_input

RECORD = FORMER_DFER_RECORD
TAGS = [f'former_dfer.dfew_fold{fold}' for fold in range(1, 6)]
SMALL = dict(num_frames=4, img_size=32)


class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_PATH'], 'w').write('x')",))


@pytest.fixture(scope='module')
def official_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('former_dfer') / 'model_pretrained_on_DFEW_fd1.pth'
    best_acc = torch.tensor(66.2104)
    save_as_training_script(former_dfer_container(former_dfer_state_dict(), best_acc), path, cuda_tensors=(best_acc,))
    with zipfile.ZipFile(path) as z:  # the file is the training script's: best_acc's storage is a CUDA one
        assert b'cuda:0' in next(z.read(n) for n in z.namelist() if n.endswith('data.pkl'))
    return path


def test_recorded_official_format():
    keys = [e['key'] for e in RECORD['state_dict']]
    assert all(k.startswith('module.') for k in keys) and len(keys) == 169
    assert {k.split('.')[1] for k in keys} == {'s_former', 't_former', 'fc'}
    assert RECORD['input'] == {'shape': [2, 16, 3, 112, 112], 'low': 0.0, 'high': 1.0, 'layout': 'BTCHW'}
    assert len(RECORD['official_commit']) == 40 and len(RECORD['logits']) == 2


@pytest.mark.parametrize('input_layout', ['BTCHW', 'BCTHW'])
def test_official_checkpoint_gives_the_official_logits(official_file, input_layout):
    model = timm.create_model(
        'former_dfer.dfew_fold1', pretrained=True, input_layout=input_layout,
        pretrained_cfg_overlay=dict(file=str(official_file))).eval()
    clip = fixed_input(RECORD['input']['shape'], RECORD['input']['low'], RECORD['input']['high'])  # (B, T, C, H, W)
    with torch.no_grad():
        logits = model(clip if input_layout == 'BTCHW' else clip.transpose(1, 2))
    expected = torch.tensor(RECORD['logits'], dtype=torch.float64)
    assert (logits.double() - expected).abs().max().item() < 1e-4
    assert not torch.equal(model.stem.bn1.running_var, torch.ones(64))  # eval uses non-default statistics


def test_official_checkpoint_resampled_to_other_frames_and_size(official_file):
    model = timm.create_model(
        'former_dfer.dfew_fold3', pretrained=True, num_frames=8, img_size=64, num_classes=3,
        pretrained_cfg_overlay=dict(file=str(official_file))).eval()
    assert model.pos_embed_spatial.shape == (1, 4, 4, 256) and model.pos_embed_temporal.shape == (1, 9, 512)
    official = former_dfer_state_dict()
    # the class token's position is kept; linear 16 -> 8 frames averages neighbour pairs
    pos = official['module.t_former.pos_embedding']
    torch.testing.assert_close(model.pos_embed_temporal[:, 0], pos[:, 0])
    torch.testing.assert_close(model.pos_embed_temporal[:, 1:], (pos[:, 1::2] + pos[:, 2::2]) / 2)
    fc2 = official['module.t_former.spatial_transformer.layers.2.1.fn.fn.net.3.weight']
    assert torch.equal(model.blocks[2].mlp.fc2.weight, fc2)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 8, 64, 64)).shape == (1, 3)


def test_own_keys_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model('former_dfer', **SMALL).eval()
    path = tmp_path / 'model.safetensors'
    save_file(source.state_dict(), path)
    model = timm.create_model('former_dfer.dfew_fold2', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **SMALL).eval()
    clip = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(clip), source(clip))


def test_another_architecture_is_refused_naming_the_keys(tmp_path):
    path = tmp_path / 'other.safetensors'
    save_file(timm.create_model('former_dfer', depth=2, **SMALL).state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match=r'Former-DFER: missing keys: blocks\.2\..*depth'):
        timm.create_model('former_dfer', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL)


@pytest.mark.parametrize('entry', ['epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder'])
def test_a_payload_in_any_entry_never_runs_and_is_named(tmp_path, monkeypatch, entry):
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('PWNED_PATH', str(marker))
    path = tmp_path / 'evil.pth'
    checkpoint = former_dfer_container({'module.fc.bias': torch.zeros(7)}, torch.tensor(1.))
    checkpoint[entry] = {'state': _Payload()} if entry in ('state_dict', 'optimizer') else _Payload()
    save_as_training_script(checkpoint, path)
    with pytest.raises(PretrainedWeightsError) as info:
        timm.create_model('former_dfer.dfew_fold1', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    message = str(info.value)
    assert '\n' not in message and 'builtins.exec' in message and 'evil.pth' in message
    assert not marker.exists()


@pytest.mark.parametrize('name', ['former_dfer'] + TAGS)
def test_pretrained_without_file_names_the_download_page_and_the_overlay(name):
    with pytest.raises(PretrainedWeightsUnavailableError) as info:
        timm.create_model(name, pretrained=True)
    message = str(info.value)
    assert DOWNLOAD_PAGE in message and 'pretrained_cfg_overlay=dict(file=' in message and 'fd' in message


def test_every_tag_registered_with_the_authors_reported_numbers():
    assert timm.list_models('former_dfer', include_tags=True) == TAGS
    wars = {1: 66.21, 2: 64.08, 3: 66.15, 4: 65.03, 5: 67.04}  # log/DFEW-set{fold}-log.txt, "The best accuracy"
    for fold, name in enumerate(TAGS, 1):
        reported = REPORTED_RESULTS[name]
        assert (reported.dataset, reported.fold, reported.uar, reported.war) == ('DFEW', fold, None, wars[fold])
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        assert cfg['origin_url'] == DOWNLOAD_PAGE and cfg['license'] == 'mit'
        assert cfg['notes'] == (reported.describe(),)
        assert cfg['notes'][0].startswith('Reported by the authors (not measured by this project)')
        assert 'UAR not reported' in cfg['notes'][0] and f'DFEW-set{fold}-log.txt' in cfg['notes'][0]
        assert cfg['label_names'] == ('Happy', 'Sad', 'Neutral', 'Angry', 'Surprise', 'Disgust', 'Fear')


def test_data_config_gives_the_official_test_input():
    from PIL import Image
    from logoformer_timm.data import TEST_PROTOCOLS, ClipTransform, resolve_video_data_config
    model = timm.create_model('former_dfer.dfew_fold1', input_layout='BTCHW')
    config = resolve_video_data_config(model)
    assert config == dict(input_size=(3, 16, 112, 112), interpolation='bilinear', mean=(0., 0., 0.), std=(1., 1., 1.),
                          crop_pct=1.0, crop_mode='squash', input_layout='BTCHW',
                          test_protocol=TEST_PROTOCOLS['former_dfer'])
    frames = torch.randint(0, 256, (16, 3, 150, 130), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clip = ClipTransform(**config)(frames)
    # the official test transform: PIL resize of each face crop to (112, 112), bilinear, then / 255, (T, C, H, W)
    official = torch.stack([
        torch.from_numpy(np.array(Image.fromarray(f.permute(1, 2, 0).numpy()).resize((112, 112), Image.BILINEAR)))
        .permute(2, 0, 1).float() / 255 for f in frames])
    assert clip.shape == official.shape == (16, 3, 112, 112) and clip.dtype == torch.float32
    assert torch.equal(clip, official)  # the same resize (PIL's) and scaling: the same pixels


def test_trains_a_step():
    model = timm.create_model('former_dfer', num_classes=3, drop_path_rate=0.1, **SMALL).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = torch.nn.functional.cross_entropy(model(torch.rand(2, 3, 4, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()


def test_fx_trace_and_feature_extractor():
    from timm.models import create_feature_extractor
    model = timm.create_model('former_dfer', dynamic_img_size=True, **SMALL).eval()
    extractor = create_feature_extractor(model, {'blocks.1': 'mid', 'head': 'logits'})
    clip = torch.rand(1, 3, 6, 48, 48)  # another size than built: the resampling is outside the graph
    with torch.no_grad():
        out = extractor(clip)
        torch.testing.assert_close(out['logits'], model(clip), rtol=1e-4, atol=1e-5)
    assert out['mid'].shape == (1, 7, 512)


def test_features_only_returns_the_frame_tokens_of_every_temporal_layer():
    model = timm.create_model('former_dfer', features_only=True, **SMALL).eval()
    assert model.feature_info.channels() == [512] * 3
    with torch.no_grad():
        outs = model(torch.rand(2, 3, 4, 32, 32))
    assert [o.shape for o in outs] == [(2, 512, 4, 1, 1)] * 3


def test_compile_fullgraph():
    model = timm.create_model('former_dfer', spatial_depth=1, depth=1, num_frames=2, img_size=32).eval()
    clip = torch.rand(1, 3, 2, 32, 32)
    with torch.no_grad():
        expected = model(clip)
        compiled = torch.compile(model, fullgraph=True, backend='eager')
        torch.testing.assert_close(compiled(clip), expected, rtol=1e-4, atol=1e-5)


def test_onnx_export_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model('former_dfer', depth=1, num_frames=2, img_size=32, input_layout='BTCHW').eval()
    assert_onnx_matches_eager(model, tmp_path / 'former_dfer.onnx', (2, 3, 32, 32), make_clip=torch.rand)
