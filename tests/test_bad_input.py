"""A table of bad inputs per entry point: each gives ONE line `error: ...` naming the problem, a non-zero exit
(2 for usage errors) and leaves no output file behind. Everything runs in-process on tiny settings."""
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from logoformer_timm import benchmark, eval as eval_cli, predict, train as train_cli
from logoformer_timm.data.synthetic import make_motion_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = ['--model', 'logoformer_tiny', '--img-size', '16', '--num-segments', '2', '--frames-per-segment', '2',
        '--workers', '0']


def _script(name):
    spec = importlib.util.spec_from_file_location(f'hub_{name}', REPO / 'hub' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('bad_input')
    make_motion_dataset(str(root), (('train', 1), ('test', 1)), ('right', 'left'), frames_range=(5, 6), size=16, seed=1)
    model = timm.create_model('logoformer_tiny', num_classes=2, num_frames=4, img_size=16)
    save_file(model.state_dict(), root / 'two.safetensors')
    (root / 'a_file').write_text('not a folder')
    (root / 'latin1.txt').write_bytes((root / 'test.txt').read_bytes() + 'caf\xe9/clip 5 0\n'.encode('latin-1'))
    # a clip whose first frame is not an image: the DataLoader worker that reads it fails
    broken = sorted(p for p in root.rglob('*.png'))[0]
    broken.write_bytes(b'not a png')
    (root / 'broken.txt').write_text(f'{broken.parent.relative_to(root)} 5 0\n')
    return root


def train_args(d, *extra):
    return [*TINY, '--num-classes', '2', '--data-root', str(d), '--train-list', str(d / 'train.txt'), '--val-list',
            str(d / 'test.txt'), '--output', str(d / 'out' / 'train'), '--batch-size', '2', '--epochs', '1', *extra]


def eval_args(d, *extra):
    return ['--data-root', str(d), '--list', str(d / 'test.txt'), '--output', str(d / 'out' / 'eval'),
            '--num-segments', '2', '--workers', '0', '--model', 'logoformer_tiny', '--img-size', '16',
            '--checkpoint', str(d / 'two.safetensors'), *extra]


NO_GPU = not torch.cuda.is_available()
CASES = [
    # (entry point, argv from the data folder, exit code, message regex, output that must not exist)
    ('train', lambda d: train_args(d, '--grad-accum', '0'), 2, r'--grad-accum: must be an integer >= 1, got 0', 'train'),
    ('train', lambda d: train_args(d, '--epochs', 'x'), 2, r"--epochs: invalid positive_int value: 'x'", 'train'),
    ('train', lambda d: train_args(d, '--lr', '1e30', '--batch-size', '1'), 2,
     r'loss is (inf|nan|-inf) at epoch 1, batch 1; lower --lr', None),
    ('train', lambda d: [*train_args(d)[:-6], '--output', str(d / 'a_file' / 'run'), '--batch-size', '2', '--epochs',
                         '1'], 2, r'--output .*a_file/run: cannot create the folder, .*a_file is a file', None),
    ('train', lambda d: train_args(d, '--checkpoint', str(d / 'two.safetensors'), '--model', 'logoformer_small'), 2,
     r'do not fit this LOGO-Former', 'train/last'),
    ('eval', lambda d: eval_args(d, '--num-clips', '0'), 2, r'--num-clips: must be an integer >= 1, got 0', 'eval'),
    ('eval', lambda d: [*eval_args(d)[:-2], '--checkpoint', 'does/not/exist'], 2,
     r'--checkpoint does/not/exist: no such file or folder', 'eval'),
    ('eval', lambda d: eval_args(d, '--output', str(d / 'a_file' / 'eval')), 2,
     r'--output .*a_file/eval: cannot create the folder, .*a_file is a file', None),
    ('eval', lambda d: eval_args(d, '--list', str(d / 'latin1.txt')), 2,
     r'latin1\.txt:\d+ is not UTF-8 text \(byte 0xe9\); save the list as UTF-8', 'eval'),
    ('eval', lambda d: eval_args(d, '--list', str(d / 'broken.txt'), '--workers', '1'), 2,
     r'^error: .*broken.txt:1: .*(cannot identify image|not a readable|frame)', 'eval/metrics.json'),
    ('predict', lambda d: ['video.mp4', '--window', 'nan'], 2, r'--window: must be a finite number > 0, got nan', None),
    ('predict', lambda d: ['video.mp4', '--window', '2', '--stride', '0'], 2, r'--stride: must be a finite number > 0',
     None),
    ('predict', lambda d: ['video.mp4', '--margin', 'inf'], 2, r'--margin: must be a finite number > 0, got inf', None),
    ('predict', lambda d: ['video.mp4', '--margin', '1e9'], 2, r'--margin at most 10', None),
    ('export', lambda d: ['--model', 'logoformer_tiny', '--checkpoint', str(d / 'two.safetensors'), '--out',
                          str(d / 'a_file'), '--model-kwargs'], 2, r'--out .*a_file is a file', None),
    ('export', lambda d: ['--model', 'logoformer_tiny', '--checkpoint', str(d / 'two.safetensors'), '--out',
                          str(d / 'out' / 'repo')], 2, r'bare weights file', 'repo'),
    ('benchmark', lambda d: ['--model', 'logoformer_tiny', '--num-frames', '4', '--img-size', '32', '--gemm-size', '32',
                             '--num-warm-iter', '0', '--num-bench-iter', '1', '--model-kwargs', 'num_heads=3'], 2,
     r'cannot build logoformer_tiny.*divisible by num_heads', None),
    ('benchmark', lambda d: ['--model', 'logoformer_tiny', '--results-file', str(d / 'no' / 'dir' / 'r.csv')], 2,
     r"r.csv: the folder .*no/dir' does not exist", None),
]
if NO_GPU:
    CASES += [
        ('train', lambda d: train_args(d, '--device', 'cuda'), 2, r'--device cuda .*no CUDA GPU is available', 'train'),
        ('eval', lambda d: eval_args(d, '--device', 'cuda'), 2, r'--device cuda .*no CUDA GPU is available', 'eval'),
    ]
ENTRY = dict(train=train_cli.main, eval=eval_cli.main, predict=predict.main, benchmark=benchmark.main)


@pytest.mark.parametrize('entry, argv, code, message, absent', CASES,
                         ids=[f'{c[0]}-{i}' for i, c in enumerate(CASES)])
def test_bad_input_gives_one_line_and_no_output(data, tmp_path, capsys, entry, argv, code, message, absent):
    main = ENTRY.get(entry) or _script(entry)
    shutil.rmtree(data / 'out', ignore_errors=True)
    (data / 'out').mkdir()
    try:
        result = main(argv(data))
    except SystemExit as e:  # argparse usage errors
        result = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(('epoch', '\r'))]
    lines = [line for line in lines if 'it/s' not in line and 's/it' not in line]  # progress bars
    assert result == code, err
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert 'Traceback' not in err and re.search(message, lines[0]), lines[0]
    if absent:
        assert not (data / 'out' / absent).exists()


def test_a_byte_order_mark_is_not_part_of_the_first_path(data, tmp_path):
    from logoformer_timm.data import read_annotation_list
    listed = tmp_path / 'bom.txt'
    listed.write_bytes(b'\xef\xbb\xbf' + (data / 'test.txt').read_bytes())
    records, _ = read_annotation_list(str(listed), str(data))
    assert [r.path for r in records] == [r.path for r in read_annotation_list(str(data / 'test.txt'), str(data))[0]]


def test_duplicate_annotation_lines_are_warned_about(data, tmp_path, caplog):
    from logoformer_timm.data import read_annotation_list
    listed = tmp_path / 'twice.txt'
    first = (data / 'test.txt').read_text().splitlines()[0]
    listed.write_text(f'{first}\n{first}\n')
    assert len(read_annotation_list(str(listed), str(data))[0]) == 2
    assert 'lists 1 clips more than once' in caplog.text


def test_thousands_of_windows_are_refused_not_run(tmp_path):
    from logoformer_timm.video import MAX_WINDOWS, sliding_windows
    assert len(sliding_windows(60., 1., 0.5)) == 119
    with pytest.raises(ValueError, match=rf'gives 59001 windows over 60.0 s, more than {MAX_WINDOWS}; pass a larger'):
        sliding_windows(60., 1., 0.001)


def test_push_yes_without_a_token_fails_before_any_network_call(data, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, 'get_token', lambda: None)
    monkeypatch.setattr(huggingface_hub, 'HfApi', lambda *a, **k: pytest.fail('HfApi was created'))
    argv = [str(tmp_path), '--repo-id', 'logoformer-timm/x', '--checkpoint', str(data / 'two.safetensors'), '--yes']
    assert _script('push')(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: push --yes needs a Hugging Face token') and err.count('\n') == 1
