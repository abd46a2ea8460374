"""What ``logoformer-eval`` reads and writes can be trusted: which files of a folder are frames and what their
pixels are (every PIL mode, 16-bit PNG), whose protocol a result was measured with, the precision it ran in, the
unit of its numbers, its two result files written as a pair, and a progress line in a redirected log. The errors
these checks give (one line, before the weights are read) are in tests/test_bad_input.py."""
import hashlib
import json
import os
import re

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from logoformer_timm import cli
from logoformer_timm.dfer import evaluate as eval_cli
from logoformer_timm.dfer.datasets import ClipFolderDataset, ClipLoadError, list_frames
from logoformer_timm.dfer.synthetic import make_motion_dataset


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('eval_trust')
    make_motion_dataset(str(root), (('test', 2),), ('right', 'left'), frames_range=(5, 6), size=16, seed=2)
    model = timm.create_model('logoformer_tiny', num_classes=2, num_frames=4, img_size=16)
    save_file(model.state_dict(), root / 'two.safetensors')
    return root


def eval_args(d, output, *extra):
    return ['--data-root', str(d), '--list', str(d / 'test.txt'), '--output', str(output), '--num-segments', '2',
            '--workers', '0', '--model', 'logoformer_tiny', '--img-size', '16', '--checkpoint',
            str(d / 'two.safetensors'), *extra]


# ---------------------------------------------------------------------------------------------- frames (items 2, 3)

def test_hidden_and_non_image_files_are_not_frames_and_one_number_twice_is_refused(tmp_path):
    clip = tmp_path / 'clip'
    clip.mkdir()
    for i in (1, 2, 3):
        Image.new('RGB', (4, 4)).save(clip / f'{i:05d}.jpg')
    (clip / '.00099.jpg').write_bytes((clip / '00001.jpg').read_bytes())  # hidden
    (clip / '._00002.jpg').write_bytes(b'\0\5\26\7')  # macOS's AppleDouble file beside a copied frame
    (clip / '00004.jpg').mkdir()  # a folder is not a frame
    (clip / 'notes.txt').write_text('not a frame')
    assert [os.path.basename(p) for p in list_frames(str(clip))] == ['00001.jpg', '00002.jpg', '00003.jpg']
    Image.new('RGB', (4, 4)).save(clip / '00001.png')  # 00001.jpg and 00001.png: which is frame 1?
    with pytest.raises(ClipLoadError, match=rf'^{re.escape(str(clip))} holds two files for one frame number '
                                            r'\(00001.jpg and 00001.png\)'):
        list_frames(str(clip))


def _twins():
    """(name, write the frame file, the pixels of its 8-bit RGB twin (3, H, W)) for every mode a frame can have."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    alpha = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    bits = grey > 127

    def with_palette(path):
        image = Image.frombytes('P', (5, 6), index.tobytes())
        image.putpalette(palette.tobytes())
        image.save(path)

    def cmyk(path):
        Image.fromarray(rgb).convert('CMYK').save(path, quality=100)
        c, m, y, k = np.moveaxis(np.asarray(Image.open(path)).astype(np.int64), -1, 0)  # as stored in the JPEG
        t = np.stack([c, m, y]) * (255 - k) + 128  # R = (255 - K) - C (255 - K) / 255, rounded, as PIL's cmyk2rgb
        return (255 - k - (((t >> 8) + t) >> 8)).astype(np.uint8)

    def f(array):
        return np.moveaxis(array, -1, 0) if array.ndim == 3 else np.stack([array] * 3)

    return [
        ('L', lambda p: Image.fromarray(grey).save(p), f(grey)),
        ('1', lambda p: Image.fromarray(bits).save(p), f(bits.astype(np.uint8) * 255)),
        ('P', with_palette, palette[index].transpose(2, 0, 1)),
        ('RGBA', lambda p: Image.fromarray(np.dstack([rgb, alpha])).save(p), f(rgb)),
        ('LA', lambda p: Image.merge('LA', [Image.fromarray(grey), Image.fromarray(alpha)]).save(p), f(grey)),
        ('CMYK', cmyk, None),
        # 16-bit greyscale: the 8-bit twin of v * 257 is v (PIL's own conversion clips it to 255: a white clip)
        ('I;16', lambda p: Image.fromarray(grey.astype(np.uint16) * 257).save(p), f(grey)),
        # mode I: 16-bit PNGs as older Pillow reads them (here from a TIFF, read by content whatever its name)
        ('I', lambda p: Image.fromarray(grey.astype(np.int32) * 257).save(p, format='TIFF'), f(grey)),
    ]


@pytest.mark.parametrize('mode, write, expected', _twins(), ids=[t[0] for t in _twins()])
def test_every_pil_mode_reads_as_its_8_bit_rgb_twin(tmp_path, mode, write, expected):
    folder = tmp_path / 'clip'
    folder.mkdir()
    path = folder / ('00001.jpg' if mode == 'CMYK' else '00001.png')
    twin = write(path)
    expected = twin if expected is None else expected
    assert Image.open(path).mode == mode
    (tmp_path / 'list.txt').write_text('clip 1 0\n')
    frames = ClipFolderDataset(str(tmp_path / 'list.txt'), str(tmp_path), num_segments=1, frames_per_segment=1)[0][0]
    assert frames.dtype == torch.uint8 and frames.shape == (1, 3, 6, 5)
    np.testing.assert_array_equal(frames[0].numpy(), expected)


def test_a_16_bit_png_clip_is_not_white(data, tmp_path):
    # the same frames in 16 bits give the pixels (and mean) of the 8-bit frames, not 1.0
    folder = sorted((data / 'frames' / 'test').iterdir())[0]
    for name in ('deep', 'shallow'):
        (tmp_path / name).mkdir()
    for frame in sorted(folder.iterdir()):
        grey = np.asarray(Image.open(frame).convert('L'))
        Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / 'deep' / frame.name)
        Image.fromarray(grey).save(tmp_path / 'shallow' / frame.name)
    (tmp_path / 'list.txt').write_text('deep 0\nshallow 0\n')
    dataset = ClipFolderDataset(str(tmp_path / 'list.txt'), str(tmp_path), num_segments=2, frames_per_segment=2)
    sixteen, eight = dataset[0][0], dataset[1][0]
    assert 0.1 < eight.float().mean() / 255 < 0.9 and torch.equal(sixteen, eight)


def test_float_frames_are_refused_in_one_line(tmp_path):
    (tmp_path / 'clip').mkdir()
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / 'clip' / '00001.png', format='TIFF')
    (tmp_path / 'list.txt').write_text('clip 1 0\n')
    dataset = ClipFolderDataset(str(tmp_path / 'list.txt'), str(tmp_path), num_segments=1, frames_per_segment=1)
    with pytest.raises(ClipLoadError, match=r'list.txt:1: frame .*00001.png holds 32-bit float pixels \(PIL mode F\)'):
        dataset[0]


# ----------------------------------------------------------------------------------------------- protocol (item 1)

@pytest.mark.parametrize('name, protocol, authors', [
    ('former_dfer.dfew_fold1', 'mae_dfer_dfew', False),
    ('former_dfer.dfew_fold1', 'dfer_clip', False),
    ('mae_dfer.dfew_fold1', 'former_dfer', False),
    ('former_dfer.dfew_fold1', 'former_dfer', True),  # its own, named
    ('former_dfer.dfew_fold1', None, True),
    ('mae_dfer.dfew_fold1', 'mae_dfer_dfew', True),
])
def test_a_protocol_is_the_authors_only_for_the_models_it_belongs_to(name, protocol, authors):
    model = timm.create_model(name, device='meta')
    argv = ['--list', 'lists/test.txt', '--output', 'out', '--model', name, '--pretrained']
    args = eval_cli.build_parser().parse_args(argv + (['--protocol', protocol] if protocol else []))
    used = eval_cli.test_protocol_of(model, args)
    metrics = dict(uar=.5, war=.5, per_class=[.5] * 7, confusion_matrix=[[1] * 7] * 7, num_clips=49, skipped_clips=0)
    record = eval_cli.metrics_record(metrics, model, args, used)
    assert record['authors_protocol'] is authors and used.authors is authors
    assert used.name == (protocol or model.pretrained_cfg['test_protocol'])  # the protocol itself, unchanged
    if authors:
        assert 'protocol_note' not in record
    else:
        owner = dict(mae_dfer_dfew='MAE-DFER', dfer_clip='DFER-CLIP', former_dfer='Former-DFER')[protocol]
        assert record['protocol_note'].startswith(
            f"protocol {protocol} belongs to {owner}'s models, not to {name.split('.')[0]} (its own: ")
        assert 'not comparable' in record['protocol_note']


def test_logoformer_with_its_own_protocol_named_is_this_projects():
    model = timm.create_model('logoformer_tiny', device='meta')
    args = eval_cli.build_parser().parse_args(['--list', 'l', '--output', 'o', '--protocol', 'logoformer'])
    record = eval_cli.metrics_record(
        dict(uar=1., war=1., per_class=[1.] * 7, confusion_matrix=[[1] * 7] * 7, num_clips=7, skipped_clips=0),
        model, args, eval_cli.test_protocol_of(model, args))
    assert record['protocol_note'] == "this project's protocol for LOGO-Former"


# ------------------------------------------- one evaluation's files: unit, precision, pair, progress (4, 6, 10, 11)

@pytest.fixture(scope='module')
def evaluated(data, tmp_path_factory):
    """An evaluation's output folder and its stderr, redirected (not a terminal), with a progress line per batch."""
    import contextlib
    import io
    out, err = tmp_path_factory.mktemp('evaluated') / 'eval', io.StringIO()
    every, cli.PROGRESS_EVERY_S = getattr(cli, 'PROGRESS_EVERY_S', None), 0.
    try:
        with contextlib.redirect_stderr(err):
            assert eval_cli.main(eval_args(data, out, '--batch-size', '1')) == 0
    finally:
        cli.PROGRESS_EVERY_S = every
    return out, err.getvalue()


def test_a_redirected_log_gets_progress_lines(evaluated):
    _, err = evaluated
    lines = [line for line in err.splitlines() if line.startswith('eval: ')]
    assert [re.fullmatch(r'eval: (\d)/4 batches, [\d.]+ batches/s', line).group(1) for line in lines] == \
        ['1', '2', '3', '4']
    assert '\r' not in err


def test_metrics_record_their_unit_and_precision(data, evaluated, tmp_path):
    from logoformer_timm.weights.card import load_eval_metrics
    out, _ = evaluated
    assert eval_cli.main(eval_args(data, tmp_path / 'bf16', '--precision', 'bf16')) == 0
    for folder, precision, cast in ((out, 'fp32', False), (tmp_path / 'bf16', 'bf16', True)):
        metrics = json.loads((folder / 'metrics.json').read_text())
        assert metrics['unit'] == 'fraction' and 0 <= metrics['uar'] <= 1 and 0 <= metrics['war'] <= 1
        assert (metrics['precision'], metrics['weights_cast']) == (precision, cast)
        load_eval_metrics(folder / 'metrics.json')  # the card's schema takes it


def test_prediction_json_records_the_precision(tmp_path):
    jsonschema = pytest.importorskip('jsonschema')
    pytest.importorskip('av')
    from video_helpers import grey_video
    from logoformer_timm.video.predict import PREDICTION_SCHEMA, predict_video
    from logoformer_timm.weights.inference import prepare_for_inference
    path = grey_video(tmp_path / 'grey.mp4', 4, size=(32, 32))
    for precision, cast in (('fp32', False), ('bf16', True)):
        model = timm.create_model('logoformer_tiny', num_frames=4, img_size=16)
        result = predict_video(path, prepare_for_inference(model, precision), detect=False).to_dict()
        jsonschema.validate(result, PREDICTION_SCHEMA)
        assert (result['precision'], result['weights_cast']) == (precision, cast)


def _is_a_pair(folder):
    """metrics.json is absent (no result), or it goes with the predictions.jsonl beside it."""
    if not (folder / 'metrics.json').exists():
        return True
    metrics = json.loads((folder / 'metrics.json').read_text())
    return metrics.get('predictions_sha256') == hashlib.sha256((folder / 'predictions.jsonl').read_bytes()).hexdigest()


@pytest.mark.parametrize('failing', ['predictions.jsonl', 'metrics.json'])
def test_metrics_and_predictions_are_written_as_a_pair(data, evaluated, tmp_path, monkeypatch, capsys, failing):
    import shutil
    from logoformer_timm.dfer.eval_files import read_result_pair
    out = tmp_path / 'eval'
    shutil.copytree(evaluated[0], out)
    assert _is_a_pair(out) and 'predictions_sha256' in json.loads((out / 'metrics.json').read_text())
    metrics, predictions = read_result_pair(str(out))
    assert metrics['num_clips'] == len(predictions) == 4
    replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):  # no space left, a lost mount: the second evaluation's rename
        if str(dst).endswith(failing):
            raise OSError(28, 'No space left on device')
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, 'replace', failing_replace)
    assert eval_cli.main(eval_args(data, out, '--overwrite', '--precision', 'bf16')) == 2
    assert 'No space left on device' in capsys.readouterr().err
    assert _is_a_pair(out)  # the earlier pair, or no metrics.json: never new metrics beside old predictions
    assert [p.name for p in out.iterdir() if p.name.endswith('.tmp')] == []
