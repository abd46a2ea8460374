"""One file, one model, on every route: a training checkpoint with a model and an EMA entry gives the model entry
(what the authors' evaluations load) in the Python API, logoformer-eval / -predict / -train and logoformer-hub
export, says so, and ``--checkpoint-entry model_ema`` (``checkpoint_entry=`` in the cfg) takes the other."""
import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from logoformer_timm.dfer import evaluate, train
from logoformer_timm.weights import hub
from logoformer_timm.weights.loading import create_model, load_model

NAME = 'logoformer_tiny'
KWARGS = dict(num_frames=4, img_size=32)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('entries')
    torch.manual_seed(0)
    model = timm.create_model(NAME, **KWARGS).state_dict()
    ema = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.items()}
    torch.save({'model': model, 'model_ema': ema, 'epoch': 3}, root / 'both.pth')
    save_file(model, str(root / 'model.safetensors'))
    save_file(ema, str(root / 'ema.safetensors'))
    return dict(both=root / 'both.pth', model=model, ema=ema, model_file=root / 'model.safetensors',
                ema_file=root / 'ema.safetensors')


def _same(state, expected):
    return all(torch.equal(state[k], expected[k]) for k in expected)


def test_python_api_takes_the_model_entry_and_says_so(files, caplog):
    overlay = dict(file=str(files['both']))
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=overlay, **KWARGS)
    assert _same(model.state_dict(), files['model'])
    assert "holds 'model' and 'model_ema': using 'model'" in caplog.text and '--checkpoint-entry model_ema' in caplog.text
    model = timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(overlay, checkpoint_entry='model_ema'),
                              **KWARGS)
    assert _same(model.state_dict(), files['ema'])
    with pytest.raises(Exception, match="has no entry 'nope'.*model, model_ema"):
        timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(overlay, checkpoint_entry='nope'), **KWARGS)


def test_command_loaders_take_the_same_entry(files):
    # logoformer-eval / -train (create_model) and logoformer-predict / the ONNX export (load_model)
    assert _same(create_model(NAME, str(files['both']), **KWARGS).state_dict(), files['model'])
    assert _same(create_model(NAME, str(files['both']), checkpoint_entry='model_ema', **KWARGS).state_dict(),
                 files['ema'])
    model, _ = load_model(NAME, str(files['both']), checkpoint_entry='model_ema')
    assert _same(model.state_dict(), {k: v for k, v in files['ema'].items() if 'pos_embed' not in k})


def _eval(demo_data, checkpoint, out, *extra):
    assert evaluate.main(['--model', NAME, '--checkpoint', str(checkpoint), '--data-root', str(demo_data), '--list',
                          str(demo_data / 'test.txt'), '--output', str(out), '--workers', '0', *extra]) == 0
    return [json.loads(line)['probs'] for line in (out / 'predictions.jsonl').read_text().splitlines()]


def test_eval_and_train_take_the_model_entry_and_the_flag_the_other(files, demo_data, tmp_path, capsys, caplog):
    assert _eval(demo_data, files['both'], tmp_path / 'a') == _eval(demo_data, files['model_file'], tmp_path / 'b')
    assert "holds 'model' and 'model_ema': using 'model'" in caplog.text
    assert (_eval(demo_data, files['both'], tmp_path / 'c', '--checkpoint-entry', 'model_ema')
            == _eval(demo_data, files['ema_file'], tmp_path / 'd'))
    code = evaluate.main(['--model', NAME, '--checkpoint', str(files['model_file']), '--checkpoint-entry', 'model_ema',
                          '--list', str(demo_data / 'test.txt'), '--data-root', str(demo_data),
                          '--output', str(tmp_path / 'e')])
    assert code != 0 and 'has no entry' in capsys.readouterr().err  # a plain state dict has no entries
    code = train.main(['--model', NAME, '--checkpoint', str(files['both']), '--checkpoint-entry', 'nope',
                       '--data-root', str(demo_data), '--train-list', str(demo_data / 'train.txt'), '--val-list',
                       str(demo_data / 'test.txt'), '--output',
                       str(tmp_path / 'run'), '--epochs', '1', '--workers', '0', '--num-classes', '7'])
    assert code != 0 and "has no entry 'nope'" in capsys.readouterr().err  # the flag reaches the trainer's loader


def test_hub_export_takes_the_model_entry_and_the_flag_the_other(files, tmp_path):
    kwargs = ['--model-kwargs']  # no values: the architecture's defaults (frames and size come from the weights)
    assert hub.main(['export', '--model', NAME, '--checkpoint', str(files['both']), '--out', str(tmp_path / 'm'),
                     *kwargs]) == 0
    assert _same(load_file(str(tmp_path / 'm' / 'model.safetensors')), files['model'])
    assert hub.main(['export', '--model', NAME, '--checkpoint', str(files['both']), '--out', str(tmp_path / 'e'),
                     '--checkpoint-entry', 'model_ema', *kwargs]) == 0
    assert _same(load_file(str(tmp_path / 'e' / 'model.safetensors')), files['ema'])
    assert hub.main(['verify', str(tmp_path / 'e'), '--checkpoint', str(files['both']), '--checkpoint-entry',
                     'model_ema', *kwargs]) == 0  # verify (and push) compare with the same entry


def test_predict_takes_the_same_entry(files, capsys):
    from video_helpers import media
    from logoformer_timm.video import predict
    video = str(media('single_face.mp4'))
    runs = {}
    for key, args in (('both_ema', ['--checkpoint', str(files['both']), '--checkpoint-entry', 'model_ema']),
                      ('ema', ['--checkpoint', str(files['ema_file'])])):
        assert predict.main([video, '--model', NAME, *args, '--json', '--no-detect']) == 0
        runs[key] = json.loads(capsys.readouterr().out)['windows'][0]['probabilities']
    assert runs['both_ema'] == runs['ema']
