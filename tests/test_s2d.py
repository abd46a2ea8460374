"""S2D: the authors' two released files (the fine-tuned model and the landmark network) load through timm and every
command as one model, and match the official model.

``tests/data/s2d_official.json`` was recorded by running the official repository's ``model_finetuning.py`` (its
``VisionTransformer``, as ``s2d_base_patch16_224`` builds it) and ``landmark.Landmark('MobileFaceNet')`` (reading
the landmark file from its own folder) on weights filled by ``tests/official_fill.py``: every state-dict key of both
networks and the logits of fixed clips, for the released configuration ('dfew': ViT-B/16, 16 frames) and for the
same model at small widths ('small', 'mafw_small'; the landmark network is always the full MobileFaceNet). The
tests rebuild both files in the authors' formats and load them through ``timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=..., landmark_file=...))`` and the commands' ``--landmark-checkpoint``. The small
records carry the parity tests; the released size is checked by its keys and shapes (its logits:
``LOGOFORMER_OFFICIAL_SIZE=1``, 20 s of filling 95 M weights and a 16 x 224 x 224 forward pass).
"""
import argparse
import json
import math
import os

import pytest
import timm
import torch

from logoformer_timm.data import get_test_protocol
from logoformer_timm.data.protocol import DFER_LABELS, S2D_FERV39K_LABELS, S2D_MAFW_LABELS
from logoformer_timm.dfer import evaluate
from logoformer_timm.models import PretrainedWeightsError, PretrainedWeightsUnavailableError
from logoformer_timm.models.released import REPORTED_RESULTS
from logoformer_timm.models.s2d import LANDMARK_FILE, checkpoint_filter_fn
from logoformer_timm.weights import hub
from logoformer_timm.weights.loading import create_model
from export_checks import assert_onnx_matches_eager
from official_files import S2D_RECORD as RECORD, s2d_state_dict, write_s2d_file, write_s2d_landmark_file
from official_fill import fill_state_dict, fixed_input

# our constructor arguments for the records' small forms (the official VisionTransformer at other widths)
SMALL = dict(embed_dim=64, depth=2, num_heads=2, num_frames=4)
MAFW_SMALL = dict(embed_dim=64, depth=3, num_heads=4, num_frames=2)
SMALL_KWARGS = ['embed_dim=64', 'depth=2', 'num_heads=2']  # the command line's --model-kwargs (frames: the weights')
TAGS = ['dfew_fold1', 'dfew_fold2', 'dfew_fold3', 'dfew_fold4', 'dfew_fold5', 'ferv39k',
        'mafw_fold1', 'mafw_fold2', 'mafw_fold3', 'mafw_fold4', 'mafw_fold5']


class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PWNED_PATH'], 'w').write('x')",))


def load(name, path, landmark, **kwargs):
    overlay = dict(file=str(path), landmark_file=str(landmark))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()


def record_input(record):
    spec = record['input']
    return fixed_input(spec['shape'], spec['low'], spec['high'])


def max_diff(model, record, x=None):
    with torch.no_grad():
        got = model(record_input(record) if x is None else x).double()
    return (got - torch.tensor(record['logits'], dtype=torch.float64)).abs().max().item()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('s2d')
    return (write_s2d_file(root / 'split01_checkpoint-best.pth', 'small'),
            write_s2d_landmark_file(root / 'mobilefacenet_model_best.pth.tar'))


def test_record_is_the_official_released_configuration():
    record = RECORD['records']['dfew']
    assert RECORD['official_repo'] == 'https://github.com/MSA-LMC/S2D' and len(RECORD['commit']) == 40
    assert RECORD['commit'].startswith('e1b5e5d')
    shapes = {k: s for k, s, _ in record['state_dict']}
    assert shapes['temporal_embedding'] == [1, 16, 768] and shapes['pos_embed'] == [1, 197, 768]
    assert shapes['patch_embed_prompt.proj.weight'] == [768, 128, 1, 1]  # the landmark map's 128 channels
    assert shapes['prompt_blocks.0.conv0_0.weight'] == [8, 768, 1, 1]  # 8 hidden prompt channels
    assert shapes['prompt_blocks.11.TMA.T_Adapter.attn.qkv.weight'] == [576, 192]  # adapters of 768 / 4
    assert shapes['head.fc_cls.weight'] == [7, 768]
    assert not any('landmark' in k for k in shapes)  # the landmark network is the second file
    # ours: the same parameters, less the official model's unused last prompt norm; its fixed position embedding is
    # a buffer here; the landmark network (buffers) only up to conv_4
    model = timm.create_model('s2d', device='meta')
    ours = sum(p.numel() for p in model.parameters())
    assert ours + math.prod(shapes['pos_embed']) + 2 * 768 == int(record['num_params'])
    landmark = {k: s for k, s, _ in RECORD['landmark_state_dict']}
    assert landmark['conv1.conv.weight'] == [64, 3, 3, 3] and landmark['output_layer.linear.weight'] == [136, 512]
    kept = {k.removeprefix('landmark.'): list(v.shape)
            for k, v in model.state_dict().items() if k.startswith('landmark.')}
    assert kept == {k: s for k, s in landmark.items() if k.split('.')[0] in (
        'conv1', 'conv2_dw', 'conv_23', 'conv_3', 'conv_34', 'conv_4')}


@pytest.mark.parametrize('layout', ['BCTHW', 'BTCHW'])
def test_official_files_give_the_official_logits(files, layout):
    model = load('s2d.dfew_fold1', *files, input_layout=layout, **SMALL)
    record = RECORD['records']['small']
    x = record_input(record)
    assert max_diff(model, record, x if layout == 'BCTHW' else x.transpose(1, 2)) < 1e-4
    assert model.pretrained_cfg['label_names'] == DFER_LABELS


def test_mafw_files_give_the_official_logits_in_the_mafw_label_order(tmp_path, files):
    path = write_s2d_file(tmp_path / 'split01_checkpoint-best.pth', 'mafw_small', data_set='MAFW', nb_classes=11)
    model = load('s2d.mafw_fold1', path, files[1], **MAFW_SMALL)
    assert model.num_classes == 11 and model.pretrained_cfg['label_names'] == S2D_MAFW_LABELS
    assert max_diff(model, RECORD['records']['mafw_small']) < 1e-4


@pytest.mark.skipif(os.environ.get('LOGOFORMER_OFFICIAL_SIZE') != '1',
                    reason='the released size fills 95 M weights (20 s) and runs 16 x 224 x 224; set '
                           'LOGOFORMER_OFFICIAL_SIZE=1')
def test_released_size_gives_the_official_logits(tmp_path, files):
    model = load('s2d.dfew_fold1', write_s2d_file(tmp_path / 'split01_checkpoint-best.pth', 'dfew'), files[1])
    assert max_diff(model, RECORD['records']['dfew']) < 1e-4


def test_released_size_keys_and_shapes_load():
    """Every entry of both released files maps onto s2d's state dict (values irrelevant here: zeros, one stored
    value per tensor)."""
    def zeros(shape):
        return torch.zeros(()).expand(shape)
    state = {k: zeros(s) for k, s, _ in RECORD['records']['dfew']['state_dict']}
    state.update({f'landmark.{k}': zeros(s) for k, s, _ in RECORD['landmark_state_dict']})
    model = timm.create_model('s2d', device='meta')
    out = checkpoint_filter_fn({'model': state}, model)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_without_the_landmark_file_one_line_names_where_the_authors_publish_it(files, demo_data, tmp_path, capsys):
    path, _ = files
    with pytest.raises(PretrainedWeightsError) as info:
        timm.create_model('s2d.dfew_fold1', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL)
    message = str(info.value)
    assert '\n' not in message and 'landmark_file=' in message and LANDMARK_FILE in message
    assert 'github.com/MSA-LMC/S2D' in LANDMARK_FILE and 'mobilefacenet_model_best.pth.tar' in LANDMARK_FILE
    code = evaluate.main(['--model', 's2d.dfew_fold1', '--checkpoint', str(path), '--data-root', str(demo_data),
                          '--list', str(demo_data / 'test.txt'), '--output', str(tmp_path / 'eval'), '--workers', '0'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and '--landmark-checkpoint' in err[0] and LANDMARK_FILE in err[0]
    from video_helpers import media
    from logoformer_timm.video import predict
    code = predict.main([str(media('single_face.mp4')), '--model', 's2d.dfew_fold1', '--checkpoint', str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and '--landmark-checkpoint' in err[0] and LANDMARK_FILE in err[0]


@pytest.mark.parametrize('entry', ['args', 'model', 'scaler', 'epoch'])
def test_a_payload_in_any_entry_never_runs_and_fails_in_one_line(tmp_path, monkeypatch, files, entry):
    marker = tmp_path / 'pwned'
    monkeypatch.setenv('PWNED_PATH', str(marker))
    path = write_s2d_file(tmp_path / 'split01_checkpoint-best.pth')
    checkpoint = torch.load(path, weights_only=False)  # the test's own file
    if entry == 'args':  # an attribute of the pickled argparse.Namespace
        checkpoint['args'] = argparse.Namespace(**vars(checkpoint['args']), finetune=_Payload())
    elif entry == 'model':
        checkpoint['model'] = dict(checkpoint['model'], extra=_Payload())
    else:
        checkpoint[entry] = _Payload()
    torch.save(checkpoint, path)
    with pytest.raises(PretrainedWeightsError) as info:
        load('s2d.dfew_fold1', path, files[1], **SMALL)
    message = str(info.value)
    assert '\n' not in message and 'builtins.exec' in message and 'split01_checkpoint-best.pth' in message
    assert not marker.exists()
    landmark = tmp_path / 'mobilefacenet_model_best.pth.tar'
    torch.save({'state_dict': _Payload()}, landmark)  # the second file goes through the same reader
    with pytest.raises(PretrainedWeightsError, match='builtins.exec'):
        load('s2d.dfew_fold1', files[0], landmark, **SMALL)
    assert not marker.exists()


def test_the_args_namespace_loads_as_an_inert_stand_in(files):
    from logoformer_timm.weights.files import PickledObject, read_checkpoint
    checkpoint = read_checkpoint(files[0])
    assert set(checkpoint) == {'model', 'optimizer', 'epoch', 'scaler', 'args'} and checkpoint['optimizer'] is None
    assert isinstance(checkpoint['args'], PickledObject) and checkpoint['args'].state['model'] == 's2d_base_patch16_224'


@pytest.mark.parametrize('tag', TAGS)
def test_pretrained_without_file_names_the_hub_page_and_the_overlay(tag):
    cfg = timm.models.get_pretrained_cfg(f's2d.{tag}')
    assert cfg.origin_url == 'https://huggingface.co/cyinen/S2D'
    with pytest.raises(PretrainedWeightsUnavailableError) as info:
        timm.create_model(f's2d.{tag}', pretrained=True)
    assert cfg.origin_url in str(info.value) and 'landmark_file=' in str(info.value)


def test_every_tag_is_registered_with_the_authors_figures_labels_and_protocol():
    # the README's "w/o oversampling" columns (the other pair is named in the source: which one the files are is
    # not stated), per file
    readme = {'dfew_fold1': (61.56, 76.16), 'dfew_fold5': (63.51, 77.27), 'ferv39k': (41.28, 52.56),
              'mafw_fold1': (32.78, 46.76), 'mafw_fold3': (47.01, 62.08)}
    assert set(timm.list_models('s2d', include_tags=True)) == {f's2d.{t}' for t in TAGS}
    uars = []
    for tag in TAGS:
        name = f's2d.{tag}'
        result, cfg = REPORTED_RESULTS[name], timm.models.get_pretrained_cfg(name)
        assert 'MSA-LMC/S2D' in result.source and 'oversampling' in result.source and cfg.notes == (result.describe(),)
        if tag in readme:
            assert (result.uar, result.war) == readme[tag]
        uars.append((tag.split('_')[0], result.uar, result.war))
        assert cfg.license == 'apache-2.0' and cfg.paper_ids == 'arXiv:2312.05447'
        assert cfg.input_size == (3, 224, 224) and cfg.num_frames == 16
        assert (cfg.interpolation, cfg.crop_pct, cfg.crop_mode) == ('bilinear', 1.0, 'squash')
        labels = {'dfew': DFER_LABELS, 'ferv39k': S2D_FERV39K_LABELS, 'mafw': S2D_MAFW_LABELS}[tag.split('_')[0]]
        assert tuple(cfg.label_names) == labels and cfg.num_classes == len(labels)
        assert get_test_protocol(cfg.test_protocol).label_names == labels
    # the README's five-fold means are the means of its per-fold figures (to its rounding: MAFW's UAR mean is
    # 41.866, printed 41.86)
    for dataset, mean in (('dfew', (61.82, 76.03)), ('mafw', (41.86, 57.37))):
        folds = [(u, w) for d, u, w in uars if d == dataset]
        assert all(abs(sum(x) / 5 - m) < 0.01 for x, m in zip(zip(*folds), mean)), dataset
    assert S2D_FERV39K_LABELS == tuple(sorted(S2D_FERV39K_LABELS))  # FERV39K's test.csv: Angry 0 ... Surprise 6
    assert S2D_MAFW_LABELS == tuple(sorted(S2D_MAFW_LABELS))  # id_to_calss.txt: Anger 0 ... Surprise 10


def test_the_landmark_network_is_frozen_and_stays_in_eval_mode():
    model = timm.create_model('s2d', num_frames=2, img_size=64, embed_dim=64, depth=2, num_heads=2).train()
    assert not any(n.startswith('landmark.') for n, _ in model.named_parameters())
    assert model.landmark.training is False and model.blocks[0].training is True
    before = {k: v.clone() for k, v in model.landmark.state_dict().items()}
    x = torch.randn(2, 3, 2, 64, 64, requires_grad=True)
    model(x).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in model.landmark.state_dict().items())  # BN statistics kept
    # the landmark features are a constant to the ViT (the official model computes them under no_grad)
    embed = model.landmark_embed.weight
    assert embed.grad is not None and embed.grad.abs().sum() > 0


def test_landmark_frames_are_resized_with_aligned_corners_to_eight_times_the_patch_grid(monkeypatch):
    import torch.nn.functional as F
    seen = []
    real = F.interpolate

    def spy(x, **kwargs):
        seen.append((tuple(x.shape), kwargs))
        return real(x, **kwargs)
    monkeypatch.setattr(F, 'interpolate', spy)
    model = timm.create_model('s2d', num_frames=2, embed_dim=64, depth=1, num_heads=2).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 2, 224, 224))
    assert seen == [((2, 3, 224, 224), dict(size=(112, 112), mode='bilinear', align_corners=True))]


def test_extra_file_errors_name_the_flag(files, tmp_path):
    path, landmark = files
    with pytest.raises(PretrainedWeightsError, match='--landmark-checkpoint .*missing.pth.tar: no such file'):
        load('s2d.dfew_fold1', path, tmp_path / 'missing.pth.tar', **SMALL)
    with pytest.raises(PretrainedWeightsError, match='built from one weights file: drop landmark_file'):
        timm.create_model('mae_dfer', pretrained=True, pretrained_cfg_overlay=dict(
            file=str(path), landmark_file=str(landmark)))
    with pytest.raises(ValueError, match='--landmark-checkpoint goes with --checkpoint FILE'):
        create_model('s2d.dfew_fold1', pretrained=True, extra_files=dict(landmark_file=str(landmark)))


# the commands: the two files exported to one Hub folder (both networks in one model.safetensors) that loads alone,
# verified against the two files; the loader every command uses takes them; eval and predict take the folder

@pytest.fixture(scope='module')
def export(files, tmp_path_factory):
    path, landmark = files
    out = tmp_path_factory.mktemp('s2d_export') / 'repo'
    assert hub.main(['export', '--model', 's2d.dfew_fold1', '--checkpoint', str(path), '--landmark-checkpoint',
                     str(landmark), '--out', str(out), '--model-kwargs', *SMALL_KWARGS]) == 0
    return out


def test_export_is_one_folder_with_both_networks_that_loads_alone(files, export, capsys):
    path, landmark = files
    from safetensors.torch import load_file
    keys = load_file(str(export / 'model.safetensors'))
    assert any(k.startswith('landmark.conv_4.') for k in keys) and 'prompts.1.fovea_smooth' in keys
    record = RECORD['records']['small']
    for route in (f'local-dir:{export}',):
        assert max_diff(timm.create_model(route, pretrained=True).eval(), record) < 1e-4
    assert hub.main(['verify', str(export), '--checkpoint', str(path), '--landmark-checkpoint', str(landmark),
                     '--model-kwargs', *SMALL_KWARGS]) == 0
    out = capsys.readouterr().out
    assert 'local-dir: logits identical' in out and 'hf-hub: logits identical' in out
    card = (export / 'README.md').read_text()
    assert "authors' own weights" in card and 'Reported by the authors (not measured by this project)' in card
    # the folder holds the landmark network already: a second one is refused, in one line
    assert hub.main(['verify', str(export), '--checkpoint', str(export), '--landmark-checkpoint', str(landmark)]) != 0
    assert 'hold landmark.* already' in capsys.readouterr().err


def test_the_commands_loader_takes_the_two_files(files):
    path, landmark = files
    model = create_model('s2d.dfew_fold1', str(path), extra_files=dict(landmark_file=str(landmark)), **SMALL).eval()
    assert max_diff(model, RECORD['records']['small']) < 1e-4


def test_eval_and_predict_take_the_export(export, demo_data, tmp_path, capsys):
    assert evaluate.main(['--checkpoint', str(export), '--data-root', str(demo_data), '--list',
                          str(demo_data / 'test.txt'), '--output', str(tmp_path / 'eval'), '--workers', '0']) == 0
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    # S2D's protocol, fitted to the exported small model's 4 frames (and said to be changed)
    assert metrics['num_clips'] == 4 and metrics['test_protocol']['name'] == 's2d_dfew with clip_len=4'
    assert list(metrics['per_class']) == list(DFER_LABELS)
    capsys.readouterr()
    from video_helpers import media
    from logoformer_timm.video import predict
    assert predict.main([str(media('single_face.mp4')), '--checkpoint', str(export), '--json']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['model'].startswith('s2d') and result['labels'] == list(DFER_LABELS)
    assert abs(sum(result['windows'][0]['probabilities'].values()) - 1) < 1e-4
    # a model folder holds both networks: --landmark-checkpoint beside it is refused in one line
    code = predict.main([str(media('single_face.mp4')), '--checkpoint', str(export), '--landmark-checkpoint',
                         str(export / 'model.safetensors')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and 'a model folder holds every network' in err[-1]


def test_fine_tuning_from_the_official_files_trains_every_parameter(files):
    import torch.nn.functional as F
    model = timm.create_model('s2d.dfew_fold1', pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(
        file=str(files[0]), landmark_file=str(files[1]), num_classes=7), **SMALL).train()
    assert model.num_classes == 3 and model.head.weight.shape == (3, 64)
    F.cross_entropy(model(torch.randn(2, 3, 4, 224, 224)), torch.tensor([0, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_other_frames_and_sizes_resample_the_official_embeddings(files):
    model = load('s2d.dfew_fold1', *files, **dict(SMALL, num_frames=2, img_size=112))
    filled = fill_state_dict(RECORD['records']['small']['state_dict'])
    assert model.temporal_embed.shape == (1, 2, 64) and model.pos_embed.shape == (1, 1 + 49, 64)
    torch.testing.assert_close(model.cls_token, filled['cls_token'])
    assert torch.isfinite(model(torch.randn(1, 3, 2, 112, 112))).all()


def test_torch_compile_fullgraph_and_onnx_export(tmp_path):
    model = timm.create_model('s2d', num_frames=2, img_size=64, embed_dim=64, depth=2, num_heads=2).eval()
    x = torch.randn(1, 3, 2, 64, 64)
    compiled = torch.compile(model, backend='eager', fullgraph=True)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)
    assert_onnx_matches_eager(model, tmp_path / 's2d.onnx', (3, 2, 64, 64), batches=(2,))


def test_the_benchmark_counts_the_landmark_network():
    """logoformer-bench's S2D peer at its protocol clip: the GMACs include the MobileFaceNet trunk, whose count is
    the analytic one (each convolution's output positions x kernel x input channels per group, 16 frames at 112)."""
    from logoformer_timm.bench.counting import count_model
    from logoformer_timm.bench.models import ModelSpec, peer_specs, protocol_clip
    spec = next(s for s in peer_specs('dfer')[0] if s.name == 's2d')
    assert protocol_clip(spec) == (16, 224)
    count = count_model(spec, 16, 224)
    model = timm.create_model('s2d', device='meta')
    size, macs = 112, 0
    for module in model.landmark.modules():
        if isinstance(module, torch.nn.Conv2d):
            size = (size + 2 * module.padding[0] - module.kernel_size[0]) // module.stride[0] + 1
            macs += size * size * module.out_channels * module.kernel_size[0] ** 2 * module.in_channels // module.groups
    assert size == 14 and count.detail['landmark'] == pytest.approx(16 * macs / 1e9)
    # the rest is the ViT-B/16 with its prompts; the landmark network adds about 1 %
    assert count.infer.gmacs == pytest.approx(sum(count.detail.values()))
    assert 300 < count.infer.gmacs < 330 and count.detail['landmark'] < 0.02 * count.infer.gmacs
