"""DFER-CLIP: the authors' released files load through timm as distributed, as a plain video classifier, and match
the official model.

``tests/data/dfer_clip_official.json`` was recorded by running the official repository's ``GenerateModel`` (commit
in the file) on weights filled by ``tests/official_fill.py``: every state-dict key in the official format and the
logits of fixed clips, for the released configuration (CLIP ViT-B/32, 'dfew') and for the same model on a small
CLIP of the same structure ('small', 'small_mafw_shared_context'). The tests rebuild the checkpoint in the official
container of ``main.py`` and load it through ``timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=...))``. The small records carry the parity tests; the released size is checked
by its keys and shapes (its logits: ``LOGOFORMER_OFFICIAL_SIZE=1``, a minute of filling 150 M weights).
"""
import math
import os

import pytest
import timm
import torch
import torch.nn.functional as F

from logoformer_timm.models import CheckpointMismatchError, PretrainedWeightsError, PretrainedWeightsUnavailableError
from logoformer_timm.models.dfer_clip import MAFW_LABELS, CosineClassifier, checkpoint_filter_fn
from logoformer_timm.models.logoformer import DFER_LABELS
from logoformer_timm.models.released import REPORTED_RESULTS
from export_checks import assert_onnx_matches_eager
from official_files import (
    DFER_CLIP_RECORD as RECORD, dfer_clip_container, dfer_clip_state_dict, save_as_training_script,
    write_dfer_clip_file)
from official_fill import fixed_input

# our constructor arguments for the records' small CLIP (clip_args: 64-wide towers of 2 blocks, 64 x 64 input)
SMALL = dict(img_size=64, frame_embed_dim=64, frame_depth=2, frame_num_heads=1)
TINY = dict(SMALL, num_frames=4, embed_dim=64, num_heads=2, depth=2)  # cheapest: the contract, not parity
TAGS = ['dfew_fold1', 'dfew_fold2', 'dfew_fold3', 'dfew_fold4', 'dfew_fold5', 'ferv39k',
        'mafw_fold1', 'mafw_fold2', 'mafw_fold3', 'mafw_fold4', 'mafw_fold5']


class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_PATH'], 'w').write('x')",))


def load(name, path, **kwargs):
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()


def record_input(record, layout='BCTHW'):
    x = fixed_input(record['input']['shape'])  # (n, t, c, h, w), the official layout
    return x if layout == 'BTCHW' else x.transpose(1, 2)


def max_diff(model, record, layout='BCTHW'):
    with torch.no_grad():
        got = model(record_input(record, layout)).double()
    return (got - torch.tensor(record['logits'], dtype=torch.float64)).abs().max().item()


@pytest.fixture(scope='module')
def small_file(tmp_path_factory):
    return write_dfer_clip_file(tmp_path_factory.mktemp('dfer_clip') / 'DFEW-set1-model_best.pth', 'small')


def test_record_is_the_official_released_configuration():
    record = RECORD['records']['dfew']
    assert RECORD['official_repo'] == 'https://github.com/zengqunzhao/DFER-CLIP' and len(RECORD['commit']) == 40
    keys = [k for k, _, _, _ in record['state_dict']]
    assert len(keys) == record['num_entries'] == 618 and all(k.startswith('module.') for k in keys)
    count = {p: sum(k.startswith(f'module.{p}.') for k in keys)
             for p in ('clip_model_', 'image_encoder', 'text_encoder', 'temporal_net', 'prompt_learner')}
    assert count == dict(clip_model_=302, image_encoder=152, text_encoder=148, temporal_net=13, prompt_learner=3)
    shapes = {k: s for k, s, _, _ in record['state_dict']}
    assert shapes['module.prompt_learner.ctx'] == [7, 8, 512]  # 8 class-specific context tokens
    assert shapes['module.temporal_net.pos_embedding'] == [1, 17, 512]  # 16 frames and the class token
    # our model holds the image tower, the temporal net and one class embedding per class (+ timm's zero head bias
    # for CLIP's unbiased projection); no text tower
    model = timm.create_model('dfer_clip', device='meta')
    towers = ('module.image_encoder.', 'module.temporal_net.')
    ours = sum(math.prod(s) for k, s, _, _ in record['state_dict'] if k.startswith(towers))
    assert sum(p.numel() for p in model.parameters()) == ours + 512 + 7 * 512


def test_the_end_of_text_position_is_found_in_token_suffix():
    """The official code takes the feature at argmax(token ids); the file has no ids, but its token_suffix holds
    the end-of-text token's embedding at that position (recorded positions are the official argmax)."""
    from logoformer_timm.models.dfer_clip import CLIP_EOT_TOKEN
    for name in ('small', 'small_mafw_shared_context'):
        record = RECORD['records'][name]
        ids = torch.tensor(record['token_ids'])
        assert ids.argmax(-1).tolist() == record['eot_positions'] and (ids.max(-1).values == CLIP_EOT_TOKEN).all()
        state = dfer_clip_state_dict(name)
        suffix = state['module.prompt_learner.token_suffix']
        eot = state['module.clip_model_.token_embedding.weight'][CLIP_EOT_TOKEN]
        found = [1 + 8 + int(row.all(-1).nonzero()) for row in (suffix == eot)]
        assert found == record['eot_positions']


@pytest.mark.parametrize('layout', ['BCTHW', 'BTCHW'])
def test_official_file_gives_the_official_logits(small_file, layout):
    model = load('dfer_clip.dfew_fold1', small_file, input_layout=layout, **SMALL)
    assert max_diff(model, RECORD['records']['small'], layout) < 1e-4
    assert isinstance(model.head, CosineClassifier) and model.head.weight.shape == (7, 512)
    assert not any('text' in k or 'prompt' in k or 'clip_model' in k for k in model.state_dict())


def test_mafw_file_with_a_shared_context_gives_the_official_logits(tmp_path):
    path = write_dfer_clip_file(tmp_path / 'MAFW-set1-model_best.pth', 'small_mafw_shared_context')
    model = load('dfer_clip.mafw_fold1', path, **SMALL)
    assert model.num_classes == 11 and model.pretrained_cfg['label_names'] == MAFW_LABELS
    assert max_diff(model, RECORD['records']['small_mafw_shared_context']) < 1e-4


@pytest.mark.skipif(os.environ.get('LOGOFORMER_OFFICIAL_SIZE') != '1',
                    reason='the released size fills 150 M weights (a minute); set LOGOFORMER_OFFICIAL_SIZE=1')
def test_released_size_gives_the_official_logits(tmp_path):
    path = write_dfer_clip_file(tmp_path / 'DFEW-set1-model_best.pth', 'dfew')
    model = load('dfer_clip.dfew_fold1', path)
    assert max_diff(model, RECORD['records']['dfew']) < 1e-4


def test_released_size_keys_and_shapes_load():
    """Every entry of the released configuration's state dict maps onto dfer_clip's (values are irrelevant here:
    zeros, with the end-of-text embedding set so that it is found)."""
    record = RECORD['records']['dfew']
    state = {key: torch.zeros(shape) for key, shape, _, alias in record['state_dict'] if alias is None}
    state.update({key: state[alias] for key, _, _, alias in record['state_dict'] if alias is not None})
    embedding = state['module.clip_model_.token_embedding.weight']
    embedding[49407] = 1.
    ids = torch.tensor(record['token_ids'])
    state['module.prompt_learner.token_suffix'] = embedding[ids][:, 1 + 8:]
    model = timm.create_model('dfer_clip', device='meta')
    out = checkpoint_filter_fn({'state_dict': state}, model)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_a_suffix_without_the_end_of_text_embedding_is_refused(tmp_path):
    state = dfer_clip_state_dict('small')
    state['module.prompt_learner.token_suffix'] = state['module.prompt_learner.token_suffix'] + 1
    model = timm.create_model('dfer_clip', **SMALL)
    with pytest.raises(CheckpointMismatchError, match='end-of-text token is not found exactly once'):
        checkpoint_filter_fn({'state_dict': state}, model)


@pytest.mark.parametrize('entry', ['state_dict', 'optimizer', 'recorder', 'best_acc', 'epoch'])
def test_a_payload_in_any_entry_never_runs_and_fails_in_one_line(tmp_path, monkeypatch, entry):
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('PWNED_PATH', str(marker))
    container = dfer_clip_container(dfer_clip_state_dict('small'), torch.tensor(70.))
    if entry in ('state_dict', 'optimizer'):  # inside the entry: a weight, an optimizer state
        container[entry] = dict(container[entry], state={0: _Payload()})
    else:
        container[entry] = _Payload()
    path = tmp_path / 'DFEW-set1-model_best.pth'
    save_as_training_script(container, path)
    with pytest.raises(PretrainedWeightsError) as info:
        load('dfer_clip.dfew_fold1', path, **SMALL)
    message = str(info.value)
    assert '\n' not in message and 'builtins.exec' in message and 'DFEW-set1-model_best.pth' in message
    assert not marker.exists()


@pytest.mark.parametrize('tag', TAGS)
def test_pretrained_without_file_names_the_download_page_and_the_overlay(tag):
    cfg = timm.models.get_pretrained_cfg(f'dfer_clip.{tag}')
    assert cfg.origin_url.startswith('https://drive.google.com/file/d/')
    with pytest.raises(PretrainedWeightsUnavailableError) as info:
        timm.create_model(f'dfer_clip.{tag}', pretrained=True)
    assert cfg.origin_url in str(info.value) and 'pretrained_cfg_overlay=dict(file=' in str(info.value)


def test_every_tag_is_registered_with_the_authors_figures_and_the_official_input():
    # img/performance.png, the DFER-CLIP row: one figure per dataset (the DFEW / MAFW ones are five-fold means)
    assert set(timm.list_models('dfer_clip', include_tags=True)) == {f'dfer_clip.{t}' for t in TAGS}
    for tag in TAGS:
        name = f'dfer_clip.{tag}'
        result, cfg = REPORTED_RESULTS[name], timm.models.get_pretrained_cfg(name)
        assert 'zengqunzhao/DFER-CLIP' in result.source and cfg.notes == (result.describe(),)
        if tag == 'ferv39k':
            assert (result.uar, result.war) == (41.27, 51.65)
        else:  # no per-fold figure is published: none is claimed, the five-fold mean is named as such
            assert (result.uar, result.war) == (None, None) and 'not reported' in result.describe()
            mean = '59.61 / WAR 71.25' if tag.startswith('dfew') else '39.89 / WAR 52.55'
            assert 'mean over the five' in result.source and mean in result.source
        assert cfg.license == 'mit' and cfg.paper_ids == 'arXiv:2308.13382'
        assert cfg.input_size == (3, 224, 224) and (cfg.mean, cfg.std) == ((0., 0., 0.), (1., 1., 1.))
        assert (cfg.interpolation, cfg.crop_pct, cfg.crop_mode) == ('bilinear', 1.0, 'squash')
        if tag.startswith('mafw'):  # DFER-CLIP's own MAFW order (models/Text.py), not MAE-DFER's
            assert cfg.num_classes == 11 and cfg.label_names[:4] == ('Happiness', 'Sadness', 'Neutral', 'Anger')
        else:
            assert cfg.num_classes == 7 and cfg.label_names == DFER_LABELS
    assert timm.create_model('dfer_clip.mafw_fold2', device='meta').num_frames == 16


def test_the_classifier_is_100_times_the_cosine_similarity():
    model = timm.create_model('dfer_clip', **TINY).eval()
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        video = model.forward_head(model.forward_features(x), pre_logits=True)
        text = model.head.weight
        expected = 100 * (video / video.norm(dim=-1, keepdim=True)) @ (text / text.norm(dim=-1, keepdim=True)).T
        torch.testing.assert_close(model(x), expected)
    model.reset_classifier(3)  # a new head: random class embeddings, the same scale
    assert isinstance(model.head, CosineClassifier) and model.head.weight.shape == (3, 64) and model.head.scale == 100
    with torch.no_grad():
        assert model(x).abs().max() <= 100 + 1e-4


def test_fine_tuning_from_the_official_file_trains_every_parameter(small_file):
    model = timm.create_model('dfer_clip.dfew_fold1', pretrained=True, num_classes=3, drop_path_rate=0.1,
                              pretrained_cfg_overlay=dict(file=str(small_file), num_classes=7), **SMALL).train()
    assert model.num_classes == 3 and model.head.weight.shape == (3, 512)
    loss = F.cross_entropy(model(torch.rand(2, 3, 16, 64, 64)), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_clip_checks_name_the_model():
    model = timm.create_model('dfer_clip', **TINY)
    with pytest.raises(ValueError, match='4 frames at 64x64, got 8 frames'):
        model(torch.randn(1, 3, 8, 64, 64))
    with pytest.raises(ValueError, match='multiple of patch_size'):
        timm.create_model('dfer_clip', img_size=80)


def test_torch_compile_fullgraph_and_onnx_export(tmp_path):
    model = timm.create_model('dfer_clip', **TINY).eval()
    x = torch.randn(1, 3, 4, 64, 64)
    compiled = torch.compile(model, backend='eager', fullgraph=True)  # raises on any graph break
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
    assert_onnx_matches_eager(model, tmp_path / 'dfer_clip.onnx', (3, 4, 64, 64))
