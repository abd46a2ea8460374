"""MAE-DFER: the authors' released checkpoints load through timm as distributed and match the official model.

``tests/data/mae_dfer_official.json`` was recorded by running the official repository's ``modeling_finetune.py``
(commit in the file) on weights filled by ``tests/official_fill.py``: every state-dict key in the official format
and the logits of a fixed clip. These tests rebuild the checkpoint in the official container of
``utils.save_model`` (``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``), load it through
``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))`` and compare. Every test but the
official-size parity test builds a small model.
"""
import json
import math
from pathlib import Path

import pytest
import timm
import torch

from logoformer_timm.models import PretrainedWeightsError, PretrainedWeightsUnavailableError
from logoformer_timm.models.mae_dfer import MAFW_LABELS
from logoformer_timm.models.released import REPORTED_RESULTS
from export_checks import assert_onnx_matches_eager
from official_files import save_mae_dfer_checkpoint
from official_fill import fill_state_dict, fixed_input

RECORD = json.loads((Path(__file__).parent / 'data' / 'mae_dfer_official.json').read_text())
# our constructor arguments for each recorded official constructor call (see the record's 'constructor')
SMALL = dict(num_classes=5, num_frames=4, img_size=80, depth=2, embed_dim=64, num_heads=2)
OUR_KWARGS = {
    'dfew': {},
    'small_joint': dict(SMALL, attn_type='joint'),
    'small_cross_self_all': dict(
        SMALL, region_size=(1, 5, 5), first_attn_type='cross', third_attn_type='self', classify_tokens='all'),
    'small_org': dict(SMALL, region_size=(1, 5, 5), classify_tokens='org'),
}
TINY = dict(num_frames=4, img_size=80, depth=2, embed_dim=64, num_heads=2, region_size=(1, 5, 5))
class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_PATH'], 'w').write('x')",))


def official_state_dict(record):
    return fill_state_dict(record['state_dict'])


def load(name, path, **kwargs):
    # the file's class count, as the cfg states it: timm drops a classifier whose size differs from the cfg's
    overlay = dict(file=str(path), num_classes=kwargs.get('num_classes', 7))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()


def assert_logits(model, record, x):
    with torch.no_grad():
        got = model(x).double()
    expected = torch.tensor(record['logits'], dtype=torch.float64)[:got.shape[0]]
    assert (got - expected).abs().max().item() < 1e-4


@pytest.fixture(scope='module')
def dfew_file(tmp_path_factory):
    record = RECORD['records']['dfew']
    return save_mae_dfer_checkpoint(tmp_path_factory.mktemp('mae_dfer') / 'checkpoint-best.pth', official_state_dict(record))


def test_record_is_the_official_dfew_model():
    record = RECORD['records']['dfew']
    assert RECORD['official_repo'] == 'https://github.com/sunlicai/MAE-DFER' and len(RECORD['commit']) == 40
    assert record['num_params'] == 84878343  # 'number of params' in the official fine-tuning log
    keys = [k for k, _, _ in record['state_dict']]
    assert 'pos_embed' not in keys and 'lg_region_tokens' in keys  # the sinusoid table is not in the file
    model = timm.create_model('mae_dfer', device='meta')
    assert sum(p.numel() for p in model.parameters()) == record['num_params']
    assert model.state_dict()['region_tokens'].shape == (8, 512)  # 4 x 2 x 1 regions of the 8 x 10 x 10 grid


def test_official_dfew_checkpoint_gives_the_official_logits_in_both_layouts(dfew_file):
    record = RECORD['records']['dfew']
    x = fixed_input(record['input']['shape'], record['input']['low'], record['input']['high'])
    model = load('mae_dfer.dfew_fold1', dfew_file)
    assert_logits(model, record, x)
    model.input_layout = 'BTCHW'  # what input_layout='BTCHW' builds (the small forms load it through the route)
    assert_logits(model, record, x[:1].transpose(1, 2))  # one clip is enough for the layout


@pytest.mark.parametrize('name, layout', [
    ('small_joint', 'BCTHW'), ('small_cross_self_all', 'BCTHW'), ('small_org', 'BCTHW'), ('small_org', 'BTCHW')])
def test_other_official_forms_give_the_official_logits(name, layout, tmp_path):
    record = RECORD['records'][name]
    path = save_mae_dfer_checkpoint(tmp_path / 'checkpoint.pth', official_state_dict(record))
    model = load('mae_dfer', path, input_layout=layout, **OUR_KWARGS[name])
    x = fixed_input(record['input']['shape'], record['input']['low'], record['input']['high'])
    x = x if layout == 'BCTHW' else x.transpose(1, 2)
    assert_logits(model, record, x)
    for module in model.modules():  # the explicit softmax path (timm's fused_attn off) gives the same logits
        if hasattr(module, 'fused_attn'):
            module.fused_attn = False
    assert_logits(model, record, x)


def test_the_model_entry_is_read_not_model_ema(tmp_path):
    """The official evaluation loads checkpoint['model'] (--model_key model|module), so the filter does too."""
    record = RECORD['records']['small_org']
    state = official_state_dict(record)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    path = save_mae_dfer_checkpoint(tmp_path / 'checkpoint.pth', state, model_ema=ema)
    model = load('mae_dfer', path, **OUR_KWARGS['small_org'])
    assert_logits(model, record, fixed_input(record['input']['shape'], record['input']['low'], record['input']['high']))


def test_our_own_state_dict_round_trips_through_safetensors(tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = timm.create_model('mae_dfer', **TINY).eval()
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load('mae_dfer', path, **TINY)
    x = torch.randn(2, 3, 4, 80, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_weights_of_another_configuration_raise_naming_the_arguments(tmp_path):
    record = RECORD['records']['small_org']
    path = save_mae_dfer_checkpoint(tmp_path / 'checkpoint.pth', official_state_dict(record))
    kwargs = dict(OUR_KWARGS['small_org'], region_size=(2, 5, 5))  # 1 region, not 2
    with pytest.raises(PretrainedWeightsError, match=r'region_tokens \(2, 64\) != \(1, 64\).*region_size'):
        load('mae_dfer', path, **kwargs)


@pytest.mark.parametrize('entry', ['args', 'optimizer', 'scaler', 'model_ema', 'epoch'])
def test_a_payload_in_any_entry_never_runs_and_fails_in_one_line(tmp_path, monkeypatch, entry):
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('PWNED_PATH', str(marker))
    torch.manual_seed(0)
    state = timm.create_model('mae_dfer', **TINY).state_dict()
    path = tmp_path / 'checkpoint-best.pth'
    save_mae_dfer_checkpoint(path, state, **{entry: {'state': {0: _Payload()}} if entry == 'optimizer' else _Payload()})
    with pytest.raises(PretrainedWeightsError) as info:
        load('mae_dfer.dfew_fold1', path, **TINY)
    message = str(info.value)
    assert '\n' not in message and 'builtins.exec' in message and 'checkpoint-best.pth' in message
    assert not marker.exists()


@pytest.mark.parametrize('tag', [
    'dfew_fold1', 'dfew_fold2', 'dfew_fold3', 'dfew_fold4', 'dfew_fold5', 'ferv39k',
    'mafw_fold1', 'mafw_fold2', 'mafw_fold3', 'mafw_fold4', 'mafw_fold5'])
def test_pretrained_without_file_names_the_download_page_and_the_overlay(tag):
    name = f'mae_dfer.{tag}'
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.origin_url.startswith('https://drive.google.com/file/d/')
    with pytest.raises(PretrainedWeightsUnavailableError) as info:
        timm.create_model(name, pretrained=True)
    message = str(info.value)
    assert cfg.origin_url in message and 'pretrained_cfg_overlay=dict(file=' in message


def test_every_tag_is_registered_with_the_reported_numbers():
    # the README tables of github.com/sunlicai/MAE-DFER (fine-tuned checkpoints)
    reported = {
        'dfew_fold1': (62.59, 74.88), 'dfew_fold2': (61.96, 72.49), 'dfew_fold3': (64.00, 74.91),
        'dfew_fold4': (63.07, 74.05), 'dfew_fold5': (65.42, 75.81), 'ferv39k': (43.29, 52.50),
        'mafw_fold1': (36.11, 46.71), 'mafw_fold2': (42.37, 54.82), 'mafw_fold3': (46.25, 58.87),
        'mafw_fold4': (45.42, 59.50), 'mafw_fold5': (41.66, 55.27)}
    assert set(timm.list_models('mae_dfer', include_tags=True)) == {f'mae_dfer.{t}' for t in reported}
    dfew = [reported[f'dfew_fold{i}'] for i in range(1, 6)]
    assert [round(sum(v) / 5, 2) for v in zip(*dfew)] == [63.41, 74.43]  # the README's DFEW total
    for tag, (uar, war) in reported.items():
        name = f'mae_dfer.{tag}'
        result = REPORTED_RESULTS[name]
        assert (result.uar, result.war) == (uar, war) and 'sunlicai/MAE-DFER' in result.source
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.notes == (result.describe(),) and 'Reported by the authors' in cfg.notes[0]
        assert cfg.license == 'mit' and cfg.paper_ids == 'arXiv:2307.02227'
        if tag.startswith('mafw'):
            assert cfg.num_classes == 11 and cfg.label_names == MAFW_LABELS
        else:
            assert cfg.num_classes == 7 and cfg.label_names[0] == 'Happy' and cfg.label_names[-1] == 'Fear'
        assert ('sampling rate 1' if tag == 'ferv39k' else 'sampling rate 4') in cfg.description
    assert timm.create_model('mae_dfer.mafw_fold1', device='meta').num_classes == 11


def test_a_tag_takes_only_weights_of_its_class_count_on_every_route(tmp_path):
    # an 11-class (MAFW) file given to a 7-class DFEW tag used to become an 11-class model without label names through
    # the commands, while timm's route refused it with a size mismatch
    from safetensors.torch import save_file
    from logoformer_timm.weights.loading import create_model
    path = tmp_path / 'mafw.safetensors'
    save_file(timm.create_model('mae_dfer', num_classes=11, **TINY).state_dict(), path)
    fits = ('the weights\' classifier has 11 classes but mae_dfer.dfew_fold1 is a 7-class tag .*; use the tag that '
            'fits: mae_dfer.mafw_fold1, ')
    with pytest.raises(PretrainedWeightsError, match=f'file {path}: {fits}'):
        timm.create_model('mae_dfer.dfew_fold1', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY)
    with pytest.raises(PretrainedWeightsError, match=f'mae_dfer.dfew_fold1 with the weights of {path}: {fits}'):
        create_model('mae_dfer.dfew_fold1', str(path), **TINY)
    model = create_model('mae_dfer.mafw_fold1', str(path), **TINY)
    assert model.num_classes == 11 and model.pretrained_cfg['label_names'] == MAFW_LABELS
    assert create_model('mae_dfer', str(path), **TINY).num_classes == 11  # no tag named: the file's own classes


def test_data_config_gives_the_official_test_input():
    """Official test transform: every frame resized to 160 x 160 (PIL bilinear), / 255, ImageNet mean / std."""
    import numpy as np
    from PIL import Image
    from logoformer_timm.data import ClipTransform, resolve_video_data_config
    frames = torch.randint(0, 256, (4, 3, 120, 200), dtype=torch.uint8)
    for layout in ('BCTHW', 'BTCHW'):
        model = timm.create_model(
            'mae_dfer.dfew_fold1', num_frames=4, depth=2, embed_dim=64, num_heads=2, input_layout=layout).eval()
        cfg = resolve_video_data_config(model)
        assert cfg['input_size'] == (3, 4, 160, 160) and cfg['interpolation'] == 'bilinear'
        assert (cfg['crop_pct'], cfg['crop_mode']) == (1.0, 'squash') and cfg['input_layout'] == layout
        clip = ClipTransform(**cfg)(frames)
        resized = torch.stack([torch.from_numpy(np.array(
            Image.fromarray(f.permute(1, 2, 0).numpy()).resize((160, 160), Image.BILINEAR))) for f in frames])
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        expected = (resized.permute(0, 3, 1, 2).float() / 255 - mean) / std  # (T, C, H, W)
        expected = expected.transpose(0, 1) if layout == 'BCTHW' else expected
        assert (clip - expected).abs().max() < 1e-6  # the same PIL resize; float32 arithmetic in another order
        with torch.no_grad():
            assert model(clip[None]).shape == (1, 7)


def test_train_step_and_the_gradients_of_region_pooling():
    model = timm.create_model('mae_dfer', num_classes=3, drop_path_rate=0.1, **TINY).train()
    x = torch.randn(2, 3, 4, 80, 80)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2]))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    zero = {n for n, p in model.named_parameters() if not p.grad.any()}
    # the official 'region' pooling reads only region tokens, which the last block's interaction step never
    # updates: its parameters get zero gradients, exactly as in the official model
    assert zero == {n for n, _ in model.named_parameters() if n.startswith('blocks.1.interact')}


def test_grid_must_be_a_multiple_of_the_region_size():
    with pytest.raises(ValueError, match=r'token grid \(2, 5, 5\).*region_size \(2, 5, 10\)'):
        timm.create_model('mae_dfer', num_frames=4, img_size=80)
    with pytest.raises(ValueError, match='tubelet_size'):
        timm.create_model('mae_dfer', num_frames=5)


def test_clip_checks_name_the_model():
    model = timm.create_model('mae_dfer', **TINY)
    with pytest.raises(ValueError, match='4 frames at 80x80, got 8 frames'):
        model(torch.randn(1, 3, 8, 80, 80))
    with pytest.raises(TypeError, match='MAE-DFER expects a float clip with ImageNet'):
        model(torch.zeros(1, 3, 4, 80, 80, dtype=torch.uint8))


def test_forward_features_and_intermediates():
    model = timm.create_model('mae_dfer', **TINY).eval()
    x = torch.randn(2, 3, 4, 80, 80)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 2 + 2 * 5 * 5, 64) and model.num_prefix_tokens == 2
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, tokens)
        assert [m.shape for m in maps] == [(2, 64, 2, 5, 5)] * 2
        # 'region' pooling: the mean of the region tokens, then fc_norm
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), model.fc_norm(tokens[:, :2].mean(1)))
    features = timm.create_model('mae_dfer', features_only=True, **TINY).eval()
    assert features.feature_info.reduction() == [16, 16]


def test_torch_compile_fullgraph():
    model = timm.create_model('mae_dfer', **TINY).eval()
    x = torch.randn(1, 3, 4, 80, 80)
    compiled = torch.compile(model, backend='eager', fullgraph=True)  # raises on any graph break
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)


def test_onnx_export_matches_under_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model('mae_dfer', **TINY).eval()
    assert_onnx_matches_eager(model, tmp_path / 'mae_dfer.onnx', (3, 4, 80, 80))


def test_sinusoid_table_is_the_official_formula():
    from logoformer_timm.models.mae_dfer import sinusoid_table
    table = sinusoid_table(7, 6).double()
    for p in range(7):
        for j in range(6):
            angle = p / 10000 ** (2 * (j // 2) / 6)
            assert math.isclose(table[p, j].item(), math.sin(angle) if j % 2 == 0 else math.cos(angle), abs_tol=1e-6)


def test_a_mafw_file_loads_its_11_class_head(tmp_path):
    record = RECORD['records']['small_org']
    keys = [(k, [11, *shape[1:]] if k.startswith('head.') else shape, dtype) for k, shape, dtype in record['state_dict']]
    state = fill_state_dict(keys)
    path = save_mae_dfer_checkpoint(tmp_path / 'checkpoint-best.pth', state)
    kwargs = {k: v for k, v in OUR_KWARGS['small_org'].items() if k != 'num_classes'}
    model = timm.create_model('mae_dfer.mafw_fold3', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    assert model.num_classes == 11 and model.pretrained_cfg['label_names'] == MAFW_LABELS
    torch.testing.assert_close(model.head.weight, state['head.weight'], rtol=0, atol=0)


def test_the_commands_loader_takes_an_official_file_and_keeps_the_mafw_names(tmp_path):
    """logoformer-eval / -predict / -hub read a file with weights.loading.create_model: the class count comes from
    the file's classifier, and the tag's MAFW names stay (they were dropped for any count but 7)."""
    from logoformer_timm.weights.loading import create_model, label_names
    record = RECORD['records']['small_org']
    keys = [(k, [11, *shape[1:]] if k.startswith('head.') else shape, dtype) for k, shape, dtype in record['state_dict']]
    path = save_mae_dfer_checkpoint(tmp_path / 'checkpoint-best.pth', fill_state_dict(keys))
    kwargs = {k: v for k, v in OUR_KWARGS['small_org'].items() if k != 'num_classes'}
    model = create_model('mae_dfer.mafw_fold1', checkpoint=str(path), **kwargs)
    assert model.num_classes == 11 and label_names(model) == list(MAFW_LABELS)
