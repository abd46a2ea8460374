"""Every zoo tag evaluates as its authors evaluated it: frames, pixels, merged probabilities, predictions, UAR/WAR.

``tests/data/protocols_official.json`` was recorded by running the official repositories' test dataset,
transform, evaluation and merge code (commits in the file, how in its ``how_run``) on the synthetic dataset of
``tests/official_dataset.py``, under the deterministic weights of ``tests/official_fill.py``: Former-DFER's
``dataset_DFEW.py`` and its model, MAE-DFER's ``VideoClsDatasetFrame`` (test mode), ``final_test`` and ``merge``
with a small official model form at the DFEW input (16 x 160 x 160), and DFER-CLIP's test loader (frames and
pixels; the model is not part of this package yet). These tests regenerate the dataset, read the authors' split
file forms and compare.
"""
import hashlib
import json
from pathlib import Path

import pytest
import timm

import official_dataset as synth
from timm.models import get_pretrained_cfg

from logoformer_timm.data import TEST_PROTOCOLS, ClipTransform, get_test_protocol
from logoformer_timm.dfer import evaluate
from logoformer_timm.dfer.datasets import ClipFolderDataset, build_dataset
from logoformer_timm.models import list_clip_models
from logoformer_timm.weights import hub
from official_files import save_mae_dfer_checkpoint, write_former_dfer_file
from official_fill import fill_state_dict

RECORD = json.loads((Path(__file__).parent / 'data' / 'protocols_official.json').read_text())
FORMER_PREFIX = '/home/user/datasets/DFEW_Face'  # the prefix of Former-DFER's annotation/DFEW_set_K_test.txt
# our MAE-DFER for the recorded official form (modeling_finetune.VisionTransformer, see the record)
MAE_SMALL = dict(num_frames=16, img_size=160, depth=2, embed_dim=64, num_heads=2)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    base = synth.write_dataset(tmp_path_factory.mktemp('official_layout'))
    decoded = synth.decoded_checksums(base)
    recorded = RECORD['dataset']
    if decoded != recorded['decoded_sha256']:
        from PIL import features
        pytest.fail(
            f'This machine\'s Pillow ({__import__("PIL").__version__}, libjpeg {features.version("jpg")}) encodes or '
            f'decodes the synthetic JPEG frames differently from the recording (Pillow {recorded["pillow"]}, libjpeg '
            f'{recorded["libjpeg"]}, turbo {recorded["libjpeg_turbo"]}): the official pixels cannot be compared here.')
    return base


@pytest.fixture(scope='module')
def former_file(tmp_path_factory):
    return write_former_dfer_file(tmp_path_factory.mktemp('former_dfer') / 'model_pretrained_on_DFEW_fd1.pth')


def _sha(tensor):
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


def _check_views(ds, official, to_official):
    """Every clip's temporal views: the official frame indices and, bit for bit, the official input."""
    assert [r.num_frames for r in ds.records] == [c['num_frames'] for c in official['clips']]
    for index, clip in enumerate(official['clips']):
        views, label, _ = ds[index]
        assert label == clip['label']
        ours = ds.view_indices(index)
        for view in clip['views']:
            temporal = view.get('temporal', 0)
            assert ours[temporal] == view['frame_indices'], (clip['name'], temporal)
            pixels = to_official(views[temporal])
            assert list(pixels.shape) == view['input']['shape']
            if 'slice' in view['input']:  # a few values in the clear, for a readable failure
                assert pixels.reshape(-1)[:64].tolist() == view['input']['slice'], clip['name']
            assert _sha(pixels) == view['input']['sha256'], (clip['name'], temporal)


def _former_list(tmp_path):
    return synth.write_former_dfer_list(tmp_path / 'DFEW_set_1_test.txt', FORMER_PREFIX)


def test_record_names_the_official_code():
    for key, repo in (('former_dfer', 'zengqunzhao/Former-DFER'), ('mae_dfer', 'sunlicai/MAE-DFER'),
                      ('dfer_clip', 'zengqunzhao/DFER-CLIP')):
        assert RECORD[key]['official_repo'] == f'https://github.com/{repo}' and len(RECORD[key]['official_commit']) == 40
    assert [c['num_frames'] for c in RECORD['mae_dfer']['clips']] == list(synth.FRAME_COUNTS) * 2


def test_former_dfer_frames_and_pixels_are_the_official_loaders(dataset, tmp_path):
    model = timm.create_model('former_dfer.dfew_fold1', device='meta')
    ds = build_dataset(model, str(_former_list(tmp_path)), '', train=False, num_segments=8, frames_per_segment=2,
                       protocol=TEST_PROTOCOLS['former_dfer'], path_prefix=(FORMER_PREFIX, str(dataset)))
    _check_views(ds, RECORD['former_dfer'], lambda clip: clip.transpose(0, 1))  # ours (C, T, H, W), theirs (T, C, H, W)


def test_mae_dfer_frames_and_pixels_are_the_official_loaders(dataset, tmp_path):
    model = timm.create_model('mae_dfer.dfew_fold1', device='meta', **MAE_SMALL)
    csv = synth.write_mae_dfer_list(tmp_path / 'test.csv', synth.AUTHORS_ROOT)
    ds = build_dataset(model, str(csv), '', train=False, num_segments=8, frames_per_segment=2,
                       protocol=TEST_PROTOCOLS['mae_dfer_dfew'], path_prefix=(synth.AUTHORS_ROOT, str(dataset)))
    for clip in RECORD['mae_dfer']['clips']:  # 2 temporal x 2 spatial views, the spatial ones the same pixels
        assert [(v['temporal'], v['spatial']) for v in clip['views']] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert clip['views'][0]['input'] == clip['views'][1]['input']
    _check_views(ds, RECORD['mae_dfer'], lambda clip: clip)  # (C, T, H, W) on both sides


def test_dfer_clip_frames_and_pixels_are_the_official_loaders(dataset, tmp_path):
    protocol = TEST_PROTOCOLS['dfer_clip']
    ds = ClipFolderDataset(
        str(_former_list(tmp_path)), '', protocol=protocol, path_prefix=(FORMER_PREFIX, str(dataset)),
        transform=ClipTransform(test_protocol=protocol, input_layout='BTCHW'))
    _check_views(ds, RECORD['dfer_clip'], lambda clip: clip)  # (T, C, H, W) on both sides


def test_logoformer_eval_gives_the_official_former_dfer_evaluation(dataset, former_file, tmp_path):
    checkpoint = former_file
    split = _former_list(tmp_path)
    assert evaluate.main([
        '--model', 'former_dfer.dfew_fold1', '--checkpoint', str(checkpoint), '--list', str(split),
        '--path-prefix', f'{FORMER_PREFIX}={dataset}', '--output', str(tmp_path / 'eval'), '--workers', '0',
        '--batch-size', '6']) == 0
    names = [line.split()[0] for line in split.read_text().splitlines()]
    metrics = synth.check_official_evaluation(tmp_path / 'eval', RECORD['former_dfer'], names)
    assert metrics['authors_protocol'] is True and metrics['test_protocol']['name'] == 'former_dfer'
    assert 'protocol_note' not in metrics


def test_logoformer_eval_gives_the_official_mae_dfer_evaluation(dataset, tmp_path, capsys):
    official = RECORD['mae_dfer']
    checkpoint = save_mae_dfer_checkpoint(tmp_path / 'checkpoint-99.pth', fill_state_dict(official['model_state_dict']))
    folder = tmp_path / 'export'
    kwargs = [f'{k}={v}' for k, v in MAE_SMALL.items()]
    assert hub.main(['export', '--model', 'mae_dfer.dfew_fold1', '--checkpoint', str(checkpoint), '--out',
                     str(folder), '--model-kwargs', *kwargs]) == 0
    csv = synth.write_mae_dfer_list(tmp_path / 'test.csv', synth.AUTHORS_ROOT)  # saved/data/dfew/org/split01 form
    assert evaluate.main([
        '--checkpoint', str(folder), '--list', str(csv), '--path-prefix', f'{synth.AUTHORS_ROOT}={dataset}',
        '--output', str(tmp_path / 'eval'), '--workers', '0']) == 0
    names = [line.split()[0] for line in csv.read_text().splitlines()]
    metrics = synth.check_official_evaluation(tmp_path / 'eval', official, names)
    assert metrics['authors_protocol'] is True and metrics['test_protocol']['name'] == 'mae_dfer_dfew'
    assert metrics['test_protocol']['temporal_views'] == 2 and metrics['test_protocol']['spatial_views'] == 2
    # a flag that changes the protocol: the metrics name the protocol used and say it is not the authors'
    assert evaluate.main([
        '--checkpoint', str(folder), '--list', str(csv), '--path-prefix', f'{synth.AUTHORS_ROOT}={dataset}',
        '--output', str(tmp_path / 'one_view'), '--workers', '0', '--num-clips', '1']) == 0
    changed = json.loads((tmp_path / 'one_view' / 'metrics.json').read_text())
    assert changed['authors_protocol'] is False and "not the authors' protocol" in changed['protocol_note']
    assert changed['test_protocol']['name'] == 'mae_dfer_dfew with temporal_views=1'
    assert 'not the authors' in capsys.readouterr().out


def test_split_files_with_missing_or_short_folders_fail_in_one_line(dataset, former_file, tmp_path, capsys):
    checkpoint = former_file
    lines = _former_list(tmp_path).read_text().splitlines()
    bad_cases = {
        'missing': lines[:2] + [f'{FORMER_PREFIX}/99999 10 0'],
        'short': lines[:1] + [lines[1].replace(' 5 ', ' 6 ')],  # the folder holds 5 frames
        'bad_line': lines[:1] + [f'{FORMER_PREFIX}/00002 five 1'],
    }
    for case, case_lines in bad_cases.items():
        split = tmp_path / f'{case}.txt'
        split.write_text('\n'.join(case_lines) + '\n')
        code = evaluate.main([
            '--model', 'former_dfer.dfew_fold1', '--checkpoint', str(checkpoint), '--list', str(split),
            '--path-prefix', f'{FORMER_PREFIX}={dataset}', '--output', str(tmp_path / case), '--workers', '0'])
        err = capsys.readouterr().err.strip()
        assert code != 0 and len(err.splitlines()) == 1 and f'{case}.txt:' in err, (case, err)
        assert {'missing': '99999 is neither a frame folder', 'short': 'says 6 frames but', 'bad_line': 'expected'}[
            case] in err
    # without --path-prefix, the authors' absolute paths are named with the flag that maps them
    code = evaluate.main(['--model', 'former_dfer.dfew_fold1', '--checkpoint', str(checkpoint), '--list',
                          str(_former_list(tmp_path)), '--output', str(tmp_path / 'x'), '--workers', '0'])
    err = capsys.readouterr().err
    assert code != 0 and f'--path-prefix {FORMER_PREFIX}=DIR' in err


@pytest.mark.parametrize('name', list_clip_models(include_tags=True))
def test_every_tag_names_a_protocol_in_its_label_order(name):
    cfg = get_pretrained_cfg(name)
    protocol = get_test_protocol(cfg.test_protocol)
    assert protocol is not None, f'{name} has no test_protocol'
    if cfg.label_names:
        assert protocol.label_names == tuple(cfg.label_names), name
    assert protocol.authors == (not name.startswith('logoformer')), name
