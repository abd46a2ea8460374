"""Bad input to every command gives ONE line `error: ...` (`PROG: error: ...` for predict and the ONNX export)
naming the problem, exit 2 (those two: 1, but 2 for a bad flag value) and no output file.

The table covers bad arguments, unusable or mismatched weights, unreadable lists and clips, NaN / Inf pixels,
outputs that exist (never overwritten) and the edges (--save-crops at a file, --resume of a missing folder). The
tests below it check that a real process prints nothing but that line (no library INFO lines), that every list is
read before a model is built, a read-only --output, a byte order mark, duplicate list lines, too many windows and
push without a token. Everything runs in-process on tiny settings, except the real-process check.

Issue 34 (each test fails on the code before it):
1. another model's protocol is not reported as the authors' (tests/test_eval_trust.py,
   test_a_protocol_is_the_authors_only_for_the_models_it_belongs_to);
2. hidden files and folders are not frames, two files of one frame number are refused naming the folder
   (test_eval_trust.py::test_hidden_and_non_image_files_are_not_frames_and_one_number_twice_is_refused; the
   dupes.txt case here);
3. every PIL mode reads as its 8-bit RGB twin, float pixels are refused in one line
   (test_eval_trust.py::test_every_pil_mode_reads_as_its_8_bit_rgb_twin, test_a_16_bit_png_clip_is_not_white,
   test_float_frames_are_refused_in_one_line; the float.txt case here);
4. metrics.json and the prediction JSON record the precision and weights_cast
   (test_eval_trust.py::test_metrics_record_their_unit_and_precision, test_prediction_json_records_the_precision);
5. a decompression-bomb frame is one line naming it, and --skip-bad-clips skips it (the bomb.txt case,
   test_a_decompression_bomb_frame_is_skipped_like_any_bad_clip);
6. metrics.json and predictions.jsonl are written as a pair
   (test_eval_trust.py::test_metrics_and_predictions_are_written_as_a_pair);
7. a label that is not an ASCII integer names its line, a label out of range and a frame that does not open are
   found before the weights are read, --path-prefix maps whole components (the superscript.txt and out_of_range.txt
   cases, test_list_labels_and_frames_are_checked_before_the_weights_are_read,
   test_path_prefix_maps_whole_path_components), and --skip-bad-clips never skips a label outside the model's
   classes (test_a_label_outside_the_models_classes_is_never_skipped);
8. a torch file named .safetensors is named as one (the pth.safetensors case);
10. metrics.json says its unit (test_eval_trust.py::test_metrics_record_their_unit_and_precision);
11. a redirected log gets progress lines (test_eval_trust.py::test_a_redirected_log_gets_progress_lines)."""
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from logoformer_timm import bench as benchmark
from logoformer_timm.dfer import evaluate as eval_cli, train as train_cli
from logoformer_timm.video import export as onnx_cli, predict
from logoformer_timm.dfer import lists as lists_cli, run_folder, synthetic as synthetic_cli
from logoformer_timm.dfer.synthetic import make_motion_dataset

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
    # a clip whose first frame is not an image (a copy: the lists of the other cases stay readable)
    shutil.copytree(sorted((root / 'frames' / 'test').iterdir())[0], root / 'frames' / 'broken')
    broken = root / 'frames' / 'broken' / '00001.png'
    broken.write_bytes(b'not a png')
    (root / 'broken.txt').write_text(f'frames/broken {len(list(broken.parent.iterdir()))} 0\n')
    # a checkpoint folder whose config.json is right and whose weights file is not: PretrainedWeightsError
    (root / 'corrupt').mkdir()
    run_folder._write_model_folder(str(root / 'corrupt'), model, model.state_dict())
    (root / 'corrupt' / 'model.safetensors').write_bytes(b'not safetensors')
    # a model folder whose config.json divides the pixels by a std of 1e-45: the clips become Inf
    (root / 'zero_std').mkdir()
    run_folder._write_model_folder(str(root / 'zero_std'), model, model.state_dict())
    config = json.loads((root / 'zero_std' / 'config.json').read_text())
    config['pretrained_cfg']['std'] = [1e-45] * 3
    (root / 'zero_std' / 'config.json').write_text(json.dumps(config))
    (root / 'exists.onnx').write_text('an earlier export')
    (root / 'crops').mkdir()
    (root / 'crops' / 'window_000').mkdir()
    # DFEW split files whose fold 3 names a missing clip: no list may be written
    split = root / 'dfew' / 'split'
    for part in ('train', 'test'):
        (split / f'{part}(single-labeled)').mkdir(parents=True)
        for fold in range(1, 6):
            video = 99 if (part, fold) == ('test', 3) else 1
            (split / f'{part}(single-labeled)' / f'set_{fold}.csv').write_text(f'video_name,label\n{video},1\n')
    shutil.copytree(sorted((root / 'frames' / 'test').iterdir())[0], root / 'dfew' / 'clips' / '00001')
    _bad_lists_and_frames(root, model)
    return root


def _bomb_png(path, width=14000, height=13000):
    """A valid 1-bit PNG of width x height (182 M pixels, over PIL's decompression-bomb limit) in a few kB."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    packer, row = zlib.compressobj(9), b'\0' * (1 + (width + 7) // 8)
    rows = b''.join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0))
                     + chunk(b'IDAT', rows) + chunk(b'IEND', b''))


def _bad_lists_and_frames(root, model):
    """Issue-34 inputs: lists and frame folders found bad before the weights are read, a .pth named .safetensors."""
    from PIL import Image
    good = (root / 'test.txt').read_text().splitlines()[0]
    clip, num_frames, _ = good.split()
    (root / 'superscript.txt').write_text(f'{clip} {num_frames} \u00b2\n')  # '²'.isdigit() is True; int('²') fails
    (root / 'out_of_range.txt').write_text(f'{clip} {num_frames} 5\n')  # the weights have 2 classes
    for name in ('bomb', 'dupes', 'float'):
        shutil.copytree(root / clip, root / name)
    _bomb_png(root / 'bomb' / '00002.png')
    (root / 'bomb.txt').write_text(f'bomb {num_frames} 0\n')
    (root / 'bomb_and_good.txt').write_text(f'bomb {num_frames} 0\n{good}\n')
    Image.open(root / 'dupes' / '00001.png').convert('RGB').save(root / 'dupes' / '00001.jpg')
    (root / 'dupes.txt').write_text('dupes 0\n')
    Image.new('F', (16, 16), 0.5).save(root / 'float' / '00003.png', format='TIFF')  # read by content: float pixels
    (root / 'float.txt').write_text(f'float {num_frames} 0\n')
    torch.save(model.state_dict(), root / 'pth.safetensors')  # a real .pth, renamed


@pytest.fixture(scope='module')
def video(data):
    from video_helpers import grey_video
    return grey_video(data / 'v.mp4', 3, size=(32, 32))


def train_args(d, *extra):
    return [*TINY, '--num-classes', '2', '--data-root', str(d), '--train-list', str(d / 'train.txt'), '--val-list',
            str(d / 'test.txt'), '--output', str(d / 'out' / 'train'), '--batch-size', '2', '--epochs', '1', *extra]


def predict_args(d, *extra):
    return [str(d / 'v.mp4'), '--model', 'logoformer_tiny', *extra]


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
    ('predict', lambda d: ['video.mp4', '--margin', '1e9'], 2, r'--margin must be at most 10', None),
    ('export', lambda d: ['--model', 'logoformer_tiny', '--checkpoint', str(d / 'two.safetensors'), '--out',
                          str(d / 'a_file'), '--model-kwargs'], 2, r'--out .*a_file is a file', None),
    ('export', lambda d: ['--model', 'logoformer_tiny', '--checkpoint', str(d / 'two.safetensors'), '--out',
                          str(d / 'out' / 'repo')], 2, r'bare weights file', 'repo'),
    ('benchmark', lambda d: ['--model', 'logoformer_tiny', '--num-frames', '4', '--img-size', '32', '--gemm-size', '32',
                             '--num-warm-iter', '0', '--num-bench-iter', '1', '--model-kwargs', 'num_heads=3'], 2,
     r'cannot build logoformer_tiny.*divisible by num_heads', None),
    ('benchmark', lambda d: ['--model', 'logoformer_tiny', '--results-file', str(d / 'no' / 'dir' / 'r.csv')], 2,
     r"r.csv: the folder .*no/dir' does not exist", None),
    # PretrainedWeightsError (unreadable weights in a checkpoint folder) in every command that loads weights
    ('train', lambda d: train_args(d, '--checkpoint', str(d / 'corrupt')), 2,
     r'logoformer_tiny with pretrained weights from .*corrupt', 'train/last'),
    ('eval', lambda d: [*eval_args(d)[:-2], '--checkpoint', str(d / 'corrupt')], 2,
     r'logoformer_tiny with pretrained weights from .*corrupt', 'eval'),
    ('onnx', lambda d: ['--model', 'logoformer_tiny', '--checkpoint', str(d / 'corrupt'), '--onnx',
                        str(d / 'out' / 'm.onnx')], 1, r'logoformer_tiny with pretrained weights from', 'm.onnx'),
    ('predict', lambda d: predict_args(d, '--checkpoint', str(d / 'corrupt')), 1, r'could not load .*corrupt', None),
    # NaN / Inf pixels are refused, not turned into NaN logits and a metrics.json
    ('eval', lambda d: [*eval_args(d)[:-2], '--checkpoint', str(d / 'zero_std')], 2,
     r'a clip holds NaN or Inf pixel values.*mean / std of the model', 'eval/metrics.json'),
    ('train', lambda d: [*train_args(d), '--checkpoint', str(d / 'zero_std')], 2, r'a clip holds NaN or Inf pixel',
     'train/last'),
    ('predict', lambda d: predict_args(d, '--checkpoint', str(d / 'zero_std'), '--no-detect'), 1,
     r'a clip holds NaN or Inf pixel values', None),
    # outputs are never overwritten
    ('onnx', lambda d: ['--model', 'logoformer_tiny', '--random-init', '--onnx', str(d / 'exists.onnx')], 1,
     r'exists.onnx already exists; pass a new path', None),
    ('predict', lambda d: predict_args(d, '--random-init', '--no-detect', '--save-crops', str(d / 'crops')), 1,
     r'--save-crops .*crops is not empty; pass a new or empty folder', None),
    # edges: each used to give a raw OSError, a wrong reason or a combined message
    ('predict', lambda d: predict_args(d, '--random-init', '--no-detect', '--save-crops', str(d / 'a_file')), 1,
     r'--save-crops .*a_file is a file; pass a new or empty folder', None),
    ('predict', lambda d: ['video.mp4', '--top-k', '0'], 2, r'--top-k: must be an integer >= 1, got 0', None),
    ('predict', lambda d: ['video.mp4', '--batch-size', '0'], 2, r'--batch-size: must be an integer >= 1, got 0', None),
    ('train', lambda d: ['--resume', str(d / 'out' / 'nothing')], 2,
     r'--resume .*nothing: the folder does not exist; pass the --output of a run', 'nothing'),
    # issue 34: a list's label, frame folders and frames, found before the weights are read; a renamed .pth
    ('eval', lambda d: eval_args(d, '--list', str(d / 'superscript.txt')), 2,
     r'superscript.txt:1: expected .*\(integers at the end\), got .*\u00b2', 'eval'),
    ('eval', lambda d: eval_args(d, '--list', str(d / 'out_of_range.txt')), 2,
     r'out_of_range.txt:1: label 5 is outside \[0, 2\)', 'eval'),
    ('eval', lambda d: eval_args(d, '--list', str(d / 'bomb.txt')), 2,
     r'bomb.txt:1: frame .*bomb/00002.png is not a video frame: Image size \(182000000 pixels\) exceeds limit', 'eval'),
    ('eval', lambda d: eval_args(d, '--list', str(d / 'dupes.txt')), 2,
     r'dupes.txt:1: .*dupes holds two files for one frame number \(00001.jpg and 00001.png\)', 'eval'),
    ('eval', lambda d: eval_args(d, '--list', str(d / 'float.txt')), 2,
     r'float.txt:1: frame .*float/00003.png holds 32-bit float pixels \(PIL mode F\)', 'eval'),
    ('eval', lambda d: [*eval_args(d)[:-2], '--checkpoint', str(d / 'pth.safetensors')], 2,
     r'pth.safetensors is named .safetensors but is a torch checkpoint \(torch.save.s zip archive of a pickle\), not '
     r'safetensors; rename it to .pth', 'eval'),
    # data tools
    ('lists', lambda d: ['dfew', '--data-root', str(d / 'dfew'), '--split-dir', 'split', '--frames-dir', 'clips',
                         '--output', str(d / 'out' / 'lists')], 2, r'set_3.csv:2: frame folder .*00099 does not exist',
     'lists'),
    ('synthetic', lambda d: ['--output', str(d / 'out' / 'synthetic'), '--classes', ' , '], 2,
     r"--classes ' , ': give at least two comma-separated classes", 'synthetic'),
]
if NO_GPU:
    CASES += [
        ('train', lambda d: train_args(d, '--device', 'cuda'), 2, r'--device cuda .*no CUDA GPU is available', 'train'),
        ('eval', lambda d: eval_args(d, '--device', 'cuda'), 2, r'--device cuda .*no CUDA GPU is available', 'eval'),
    ]
ENTRY = dict(train=train_cli.main, eval=eval_cli.main, predict=predict.main, benchmark=benchmark.main,
             onnx=onnx_cli.main, lists=lists_cli.main, synthetic=synthetic_cli.main)
PREFIX = dict(predict='(logoformer-predict: )?', onnx='(export: )?')  # the forms these two commands document


@pytest.mark.parametrize('entry, argv, code, message, absent', CASES,
                         ids=[f'{c[0]}-{i}' for i, c in enumerate(CASES)])
def test_bad_input_gives_one_line_and_no_output(data, video, tmp_path, capsys, entry, argv, code, message, absent):
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
    assert len(lines) == 1 and re.match(PREFIX.get(entry, '') + 'error: ', lines[0]), err
    assert 'Traceback' not in err and re.search(message, lines[0]), lines[0]
    if absent:
        assert not (data / 'out' / absent).exists()


@pytest.mark.parametrize('weights', ['two.safetensors', 'folder'])
def test_a_real_run_prints_only_the_error_line(data, tmp_path, weights):
    # in a real process (pytest's log capture aside), timm's INFO lines "Loading pretrained weights from ..." and
    # "Loaded  from checkpoint ..." used to come first, because the model was built before --list was read
    import os
    import subprocess
    import sys
    if not (data / 'folder').exists():
        model = timm.create_model('logoformer_tiny', num_classes=2, num_frames=4, img_size=16)
        (data / 'folder').mkdir()
        run_folder._write_model_folder(str(data / 'folder'), model, model.state_dict())
    argv = [*eval_args(data)[:-2], '--checkpoint', str(data / weights), '--list', str(tmp_path / 'missing.txt')]
    proc = subprocess.run([sys.executable, '-m', 'logoformer_timm.dfer.evaluate', *argv], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert proc.returncode == 2 and proc.stderr == f'error: Annotation list not found: {tmp_path / "missing.txt"}\n'


def test_every_input_is_checked_before_the_model_is_built(data, tmp_path, monkeypatch, capsys):
    from logoformer_timm.dfer import trainer
    for module in (eval_cli, trainer):
        monkeypatch.setattr(module, 'create_model', lambda *a, **k: pytest.fail('built the model first'))
    missing = str(tmp_path / 'missing.txt')
    assert eval_cli.main([*eval_args(data), '--list', missing]) == 2
    assert train_cli.main(train_args(data, '--val-list', missing)) == 2
    assert capsys.readouterr().err == f'error: Annotation list not found: {missing}\n' * 2


@pytest.mark.parametrize('listed', ['out_of_range.txt', 'broken.txt', 'bomb.txt', 'dupes.txt', 'float.txt'])
def test_list_labels_and_frames_are_checked_before_the_weights_are_read(data, monkeypatch, capsys, listed):
    from logoformer_timm.weights import files
    monkeypatch.setattr(eval_cli, 'create_model', lambda *a, **k: pytest.fail('built the model first'))
    monkeypatch.setattr(files, 'read_checkpoint', lambda *a, **k: pytest.fail('read the weights first'))
    assert eval_cli.main(eval_args(data, '--list', str(data / listed))) == 2
    assert re.fullmatch(rf'error: {re.escape(str(data / listed))}:1: .*\n', capsys.readouterr().err)


def test_a_label_outside_the_models_classes_is_never_skipped(data, monkeypatch, capsys):
    """--skip-bad-clips skips bad clips, not a list whose labels are another set's (DFEW's own files count from 1)."""
    monkeypatch.setattr(eval_cli, 'create_model', lambda *a, **k: pytest.fail('built the model first'))
    assert eval_cli.main(eval_args(data, '--list', str(data / 'out_of_range.txt'), '--skip-bad-clips')) == 2
    assert re.fullmatch(rf'error: {re.escape(str(data / "out_of_range.txt"))}:1: label 5 is outside \[0, 2\), .*'
                        r'--skip-bad-clips does not skip this\.\n', capsys.readouterr().err)


def test_a_decompression_bomb_frame_is_skipped_like_any_bad_clip(data, tmp_path, caplog):
    out = tmp_path / 'eval'
    assert eval_cli.main([*eval_args(data, '--list', str(data / 'bomb_and_good.txt'), '--skip-bad-clips'),
                          '--output', str(out)]) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert (metrics['num_clips'], metrics['skipped_clips']) == (1, 1)
    warned = [r.getMessage() for r in caplog.records if 'bomb' in r.getMessage()]
    assert len(warned) == 1 and re.match(r'skipping clip: .*bomb_and_good.txt:1: frame .*00002.png is not a video',
                                         warned[0])


def test_path_prefix_maps_whole_path_components(tmp_path):
    from logoformer_timm.dfer import read_annotation_list
    for folder in ('copy/a', 'data/DFEW_old/b'):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / '00001.png').write_bytes(b'')
    listed = tmp_path / 'list.txt'
    listed.write_text(f'{tmp_path}/data/DFEW/a 1 0\n{tmp_path}/data/DFEW_old/b 1 0\n')
    for old in (f'{tmp_path}/data/DFEW', f'{tmp_path}/data/DFEW/'):
        records, _ = read_annotation_list(str(listed), '', path_prefix=(old, f'{tmp_path}/copy'))
        assert [r.path for r in records] == [f'{tmp_path}/copy/a', f'{tmp_path}/data/DFEW_old/b']


def test_a_byte_order_mark_is_not_part_of_the_first_path(data, tmp_path):
    from logoformer_timm.dfer import read_annotation_list
    listed = tmp_path / 'bom.txt'
    listed.write_bytes(b'\xef\xbb\xbf' + (data / 'test.txt').read_bytes())
    records, _ = read_annotation_list(str(listed), str(data))
    assert [r.path for r in records] == [r.path for r in read_annotation_list(str(data / 'test.txt'), str(data))[0]]


def test_duplicate_annotation_lines_are_warned_about(data, tmp_path, caplog):
    from logoformer_timm.dfer import read_annotation_list
    listed = tmp_path / 'twice.txt'
    first = (data / 'test.txt').read_text().splitlines()[0]
    listed.write_text(f'{first}\n{first}\n')
    assert len(read_annotation_list(str(listed), str(data))[0]) == 2
    assert 'lists 1 clips more than once' in caplog.text


def test_thousands_of_windows_are_refused_not_run(tmp_path):
    from logoformer_timm.video.decode import MAX_WINDOWS, sliding_windows
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


@pytest.mark.parametrize('entry', ['eval', 'train'])
def test_read_only_output_is_refused_before_any_work(data, monkeypatch, capsys, entry):
    # root ignores permission bits, so the read-only folder is simulated where the check asks for it
    from logoformer_timm import cli
    monkeypatch.setattr(cli.os, 'access', lambda path, mode: False)
    monkeypatch.setattr(eval_cli, 'evaluate', lambda *a, **k: pytest.fail('evaluated before checking --output'))
    shutil.rmtree(data / 'out', ignore_errors=True)
    argv = eval_args(data) if entry == 'eval' else train_args(data)
    assert ENTRY[entry](argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r'error: --output .* is not writable; pass another --output\.\n', err), err
    assert not (data / 'out').exists()
