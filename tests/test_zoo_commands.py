"""Every command takes a DFER-zoo checkpoint exactly as its authors distributed it (rebuilt from the recording in
``tests/data``): evaluation, prediction, ONNX export, Hub export / verify (the export's logits are the official
code's), fine-tuning and the benchmark's DFER peers."""
import json

import pytest
import timm
import torch

from logoformer_timm.bench import cli as bench_cli
from logoformer_timm.dfer import evaluate, train
from logoformer_timm.video import export as onnx_export
from logoformer_timm.weights import hub
from official_files import (
    DFER_CLIP_RECORD, FORMER_DFER_RECORD, MAE_DFER_RECORD, write_dfer_clip_file, write_former_dfer_file,
    write_mae_dfer_file)
from official_fill import fixed_input

NAME = 'former_dfer.dfew_fold1'


@pytest.fixture(scope='module')
def official_file(tmp_path_factory):
    return write_former_dfer_file(tmp_path_factory.mktemp('zoo') / 'model_pretrained_on_DFEW_fd1.pth')


def _official_logits():
    return torch.tensor(FORMER_DFER_RECORD['logits'], dtype=torch.float64)


def _clip():  # the recorded input, (B, T, C, H, W) as the official code takes it -> this package's default layout
    record = FORMER_DFER_RECORD['input']
    return fixed_input(record['shape'], record['low'], record['high']).transpose(1, 2)


def test_hub_export_then_local_dir_and_verify_give_the_official_logits(official_file, tmp_path, capsys):
    out = tmp_path / 'repo'
    assert hub.main(['export', '--model', NAME, '--checkpoint', str(official_file), '--out', str(out)]) == 0
    assert hub.main(['verify', str(out), '--checkpoint', str(official_file)]) == 0
    assert 'logits identical' in capsys.readouterr().out
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    with torch.no_grad():
        assert (model(_clip()).double() - _official_logits()).abs().max().item() < 1e-4
    card = (out / 'README.md').read_text()
    assert "authors' own weights" in card and 'Reported by the authors (not measured by this project)' in card
    assert 'model-index' not in card  # the authors' figure is never a measured result
    config = json.loads((out / 'config.json').read_text())
    assert config['architecture'] == 'former_dfer' and config['pretrained_cfg']['tag'] == 'dfew_fold1'
    assert hub.main(['push', str(out), '--repo-id', 'me/former_dfer.dfew_fold1', '--checkpoint',
                     str(official_file)]) == 0  # a dry run: verified, nothing uploaded
    # a folder in this package's keys (a fine-tuning run's, or this export) exports again: its sizes come from the
    # weights as Former-DFER reads them (the temporal embedding holds the class token: 17 rows, 16 frames)
    again = tmp_path / 'again'
    assert hub.main(['export', '--checkpoint', str(out), '--model', NAME, '--out', str(again)]) == 0
    model = timm.create_model(f'local-dir:{again}', pretrained=True).eval()
    assert model.num_frames == 16
    with torch.no_grad():
        assert (model(_clip()).double() - _official_logits()).abs().max().item() < 1e-4


def test_eval_and_fine_tuning_take_the_official_file(official_file, demo_data, tmp_path):
    assert evaluate.main(['--model', NAME, '--checkpoint', str(official_file), '--data-root', str(demo_data),
                          '--list', str(demo_data / 'test.txt'), '--output', str(tmp_path / 'eval'),
                          '--workers', '0']) == 0
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert list(metrics['per_class']) == list(timm.create_model(NAME).pretrained_cfg['label_names'])
    assert metrics['num_clips'] == 4
    assert train.main(['--model', 'former_dfer', '--checkpoint', str(official_file), '--num-classes', '2',
                       '--data-root', str(demo_data), '--train-list', str(demo_data / 'train.txt'),
                       '--val-list', str(demo_data / 'test.txt'), '--output', str(tmp_path / 'run'), '--epochs', '1',
                       '--batch-size', '2', '--workers', '0', '--num-segments', '2', '--frames-per-segment', '2',
                       '--img-size', '32']) == 0
    tuned = timm.create_model(f'local-dir:{tmp_path / "run" / "last"}', pretrained=True)
    assert tuned.num_classes == 2 and tuned.num_frames == 4


def test_onnx_export_of_the_official_file(official_file, tmp_path):
    pytest.importorskip('onnxruntime')
    import onnxruntime
    path = tmp_path / 'former_dfer.onnx'
    assert onnx_export.main(['--model', NAME, '--checkpoint', str(official_file), '--onnx', str(path)]) == 0
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    (logits,) = session.run(None, {session.get_inputs()[0].name: _clip().numpy()})
    assert (torch.from_numpy(logits).double() - _official_logits()).abs().max().item() < 1e-4


def test_predict_takes_the_official_file(official_file, tmp_path, capsys):
    from video_helpers import media
    from logoformer_timm.video import predict
    video = media('single_face.mp4')
    assert predict.main([str(video), '--model', NAME, '--checkpoint', str(official_file), '--json']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['model'].startswith('former_dfer') and len(result['windows']) == 1
    assert result['labels'] == list(timm.create_model(NAME).pretrained_cfg['label_names'])
    assert abs(sum(result['windows'][0]['probabilities'].values()) - 1) < 1e-4


def test_bench_dfer_peers_at_their_protocol_and_a_common_clip(capsys, monkeypatch):
    from logoformer_timm.bench import models as bench_models
    assert 's2d' in bench_models.DFER_PEERS  # its count: tests/test_s2d.py; timing ViT-B/16 at 16x224 costs a minute
    monkeypatch.setattr(bench_models, 'DFER_PEERS', tuple(p for p in bench_models.DFER_PEERS if p != 's2d'))
    rows = bench_cli.run(['--model', 'logoformer_tiny', '--peers', 'dfer', '--num-frames', '2', '--img-size', '32',
                          '--num-warm-iter', '0', '--num-bench-iter', '1', '-b', '1', '--no-isolate'],
                         log=lambda *_: None)
    clips = {(r['model'], r['grid']): r['clip'] for r in rows}
    assert clips[('logoformer_tiny', 'clip=protocol')] == '16x112x112'
    assert clips[('former_dfer', 'clip=protocol')] == '16x112x112'
    assert clips[('former_dfer', 'clip=2x32')] == '2x32x32'
    assert clips[('dfer_clip', 'clip=protocol')] == '16x224x224' and clips[('dfer_clip', 'clip=2x32')] == '2x32x32'


def test_mae_dfer_official_file_through_hub_export_verify_and_eval(demo_data, tmp_path, capsys):
    path = write_mae_dfer_file(tmp_path / 'checkpoint-best.pth')
    out = tmp_path / 'repo'
    assert hub.main(['export', '--model', 'mae_dfer.dfew_fold1', '--checkpoint', str(path), '--out', str(out)]) == 0
    assert hub.main(['verify', str(out), '--checkpoint', str(path)]) == 0
    assert 'logits identical' in capsys.readouterr().out
    record = MAE_DFER_RECORD['records']['dfew']
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    with torch.no_grad():
        logits = model(fixed_input(record['input']['shape'], record['input']['low'], record['input']['high']))
    assert (logits.double() - torch.tensor(record['logits'], dtype=torch.float64)).abs().max().item() < 1e-4
    assert evaluate.main(['--checkpoint', str(out), '--data-root', str(demo_data), '--list',
                          str(demo_data / 'test.txt'), '--output', str(tmp_path / 'eval'), '--workers', '0']) == 0
    assert json.loads((tmp_path / 'eval' / 'metrics.json').read_text())['num_clips'] == 4


# DFER-CLIP: an official file of the recorded small CLIP ('small': the released model's structure, 64-wide towers)
# through every command; the export holds no text tower, and its logits are the official code's
DFER_CLIP_SMALL = ['frame_embed_dim=64', 'frame_depth=2', 'frame_num_heads=1', 'img_size=64']


@pytest.fixture(scope='module')
def dfer_clip_export(tmp_path_factory):
    root = tmp_path_factory.mktemp('dfer_clip')
    path = write_dfer_clip_file(root / 'DFEW-set1-model_best.pth', 'small')
    out = root / 'repo'
    assert hub.main(['export', '--model', 'dfer_clip.dfew_fold1', '--checkpoint', str(path), '--out', str(out),
                     '--model-kwargs', *DFER_CLIP_SMALL]) == 0
    return path, out


def _dfer_clip_official():
    record = DFER_CLIP_RECORD['records']['small']
    clip = fixed_input(record['input']['shape']).transpose(1, 2)  # (n, t, c, h, w) -> (B, C, T, H, W)
    return clip, torch.tensor(record['logits'], dtype=torch.float64)


def test_dfer_clip_official_file_through_hub_export_verify_push_and_local_dir(dfer_clip_export, capsys):
    path, out = dfer_clip_export
    assert hub.main(['verify', str(out), '--checkpoint', str(path), '--model-kwargs', *DFER_CLIP_SMALL]) == 0
    assert 'logits identical' in capsys.readouterr().out
    assert hub.main(['push', str(out), '--repo-id', 'me/dfer_clip.dfew_fold1', '--checkpoint', str(path),
                     '--model-kwargs', *DFER_CLIP_SMALL]) == 0  # a dry run: verified, nothing uploaded
    from safetensors.torch import load_file
    keys = load_file(str(out / 'model.safetensors'))
    assert not any(k.startswith(('text', 'prompt', 'clip_model')) for k in keys)
    assert keys['head.weight'].shape == (7, 512)
    model = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    clip, logits = _dfer_clip_official()
    with torch.no_grad():
        assert (model(clip).double() - logits).abs().max().item() < 1e-4
    assert "authors' own weights" in (out / 'README.md').read_text()


def test_dfer_clip_export_through_eval_predict_and_onnx(dfer_clip_export, demo_data, tmp_path, capsys):
    _, out = dfer_clip_export
    assert evaluate.main(['--checkpoint', str(out), '--data-root', str(demo_data), '--list',
                          str(demo_data / 'test.txt'), '--output', str(tmp_path / 'eval'), '--workers', '0']) == 0
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['num_clips'] == 4 and list(metrics['per_class'])[0] == 'Happy'
    capsys.readouterr()
    from video_helpers import media
    from logoformer_timm.video import predict
    assert predict.main([str(media('single_face.mp4')), '--checkpoint', str(out), '--json']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['model'].startswith('dfer_clip')
    assert abs(sum(result['windows'][0]['probabilities'].values()) - 1) < 1e-4
    pytest.importorskip('onnxruntime')
    import onnxruntime
    path = tmp_path / 'dfer_clip.onnx'
    assert onnx_export.main(['--model', 'dfer_clip', '--checkpoint', str(out), '--onnx', str(path)]) == 0
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    clip, logits = _dfer_clip_official()
    (got,) = session.run(None, {session.get_inputs()[0].name: clip[:1].numpy()})
    assert (torch.from_numpy(got).double() - logits[:1]).abs().max().item() < 1e-4


def test_dfer_clip_fine_tuning_from_the_official_file(dfer_clip_export, demo_data, tmp_path):
    path, _ = dfer_clip_export
    assert train.main(['--model', 'dfer_clip', '--checkpoint', str(path), '--num-classes', '2',
                       '--model-kwargs', *DFER_CLIP_SMALL[:3], '--img-size', '64',
                       '--data-root', str(demo_data), '--train-list', str(demo_data / 'train.txt'),
                       '--val-list', str(demo_data / 'test.txt'), '--output', str(tmp_path / 'run'), '--epochs', '1',
                       '--batch-size', '2', '--workers', '0', '--num-segments', '2', '--frames-per-segment', '2']) == 0
    tuned = timm.create_model(f'local-dir:{tmp_path / "run" / "last"}', pretrained=True)
    assert tuned.num_classes == 2 and tuned.num_frames == 4 and tuned.head.weight.shape == (2, 512)
