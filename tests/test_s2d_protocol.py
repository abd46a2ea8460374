"""S2D's split files evaluate by its authors' test: the official loader's frames and pixels, read from its CSV forms.

``tests/data/s2d_eval_official.json`` was recorded by running MSA-LMC/S2D's ``datasets/kinetics.py``
``VideoClsDatasetFrame`` in test mode, built as its ``datasets/datasets.py`` builds it for DFEW, FERV39k and MAFW
with the arguments of ``scripts/ft_*.sh`` (commit and shims in the file's ``how_run``), on the synthetic dataset of
``tests/official_dataset.py`` in S2D's layouts: a CSV split file with a header per dataset, paths relative to a
data root, ``.jpg`` frames (DFEW, FERV39K's nested ``<scene>/<class>/<id>`` folders) and ``.png`` frames (MAFW).
These tests regenerate the dataset and compare every view's frame indices and input pixels (sha256 of the float32
tensor) with the record. Its ``evaluation`` is the official ``final_test`` and ``merge`` (and the UAR / WAR lines of
``run_class_finetuning.py``) of a small official model form with the official landmark network, under the
deterministic weights of ``tests/official_fill.py``, on seven of the DFEW-layout clips (one of each class):
``logoformer-eval`` on the same split file gives the same merged probabilities (1e-5), predictions and UAR / WAR.
"""
import hashlib
import json
from pathlib import Path

import pytest

import official_dataset as synth
from logoformer_timm.data import TEST_PROTOCOLS, ClipTransform
from logoformer_timm.dfer import evaluate
from logoformer_timm.dfer.datasets import ClipFolderDataset, read_annotation_list
from logoformer_timm.weights import hub
from official_files import S2D_RECORD, save_s2d_checkpoint, write_s2d_landmark_file
from official_fill import fill_state_dict

RECORD = json.loads((Path(__file__).parent / 'data' / 's2d_eval_official.json').read_text())
DATASETS = ('dfew', 'ferv39k', 'mafw')
SMALL = ['embed_dim=64', 'depth=2', 'num_heads=2']  # our s2d for the recorded official form (its constructor)


@pytest.fixture(scope='module')
def s2d_data(tmp_path_factory):
    """The synthetic dataset in S2D's layouts and its split files: ``{dataset: (data root, split file)}``."""
    base = tmp_path_factory.mktemp('s2d_layout')
    synth.write_dataset(base)
    synth.write_s2d_layouts(base)
    lists = synth.write_s2d_lists(base)
    out = {name: (base / RECORD['datasets'][name]['data_root'], lists[name]) for name in DATASETS}
    for name, (root, _) in out.items():
        for clip in RECORD['datasets'][name]['clips']:
            if synth.folder_checksum(root / clip['name']) != clip['decoded_sha256']:
                from PIL import __version__, features
                pytest.fail(f'This machine\'s Pillow ({__version__}, libjpeg {features.version("jpg")}) encodes or '
                            f'decodes the synthetic frames of {clip["name"]} differently from the recording (Pillow '
                            f'{RECORD["versions"]["pillow"]}): the official pixels cannot be compared here.')
    return out


def test_record_names_the_official_code_and_the_synthetic_clips():
    assert RECORD['official_repo'] == 'https://github.com/MSA-LMC/S2D' and len(RECORD['official_commit']) == 40
    expected = {'dfew': synth.clips(), 'ferv39k': synth.S2D_FERV39K_CLIPS, 'mafw': synth.S2D_MAFW_CLIPS}
    for name in DATASETS:
        clips = RECORD['datasets'][name]['clips']
        assert [(c['name'], c['num_frames'], c['label']) for c in clips] == [
            (path, frames, label) for path, frames, _, label in expected[name]]


@pytest.mark.parametrize('name', DATASETS)
def test_frames_and_pixels_are_the_official_loaders(s2d_data, name):
    root, split = s2d_data[name]
    protocol = TEST_PROTOCOLS[f's2d_{name}']
    ds = ClipFolderDataset(str(split), str(root), protocol=protocol,
                           transform=ClipTransform(test_protocol=protocol))  # (C, T, H, W) as the official clips
    official = RECORD['datasets'][name]['clips']
    assert [(r.name, r.num_frames, r.label) for r in ds.records] == [
        (c['name'], c['num_frames'], c['label']) for c in official]
    for index, clip in enumerate(official):
        # 2 temporal x 2 spatial views; a temporal view's two spatial views are the same pixels after the squash
        assert [(v['temporal'], v['spatial']) for v in clip['views']] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert all(clip['views'][2 * t]['input']['sha256'] == clip['views'][2 * t + 1]['input']['sha256']
                   for t in (0, 1))
        views, label, _ = ds[index]
        assert label == clip['label'] and len(views) == protocol.temporal_views
        ours = ds.view_indices(index)
        for view in clip['views'][::2]:
            temporal = view['temporal']
            assert ours[temporal] == view['frame_indices'], (clip['name'], temporal)
            pixels = views[temporal].contiguous()
            assert list(pixels.shape) == view['input']['shape']
            assert pixels.reshape(-1)[:32].tolist() == view['input']['slice'], clip['name']  # readable failures
            assert hashlib.sha256(pixels.numpy().tobytes()).hexdigest() == view['input']['sha256'], clip['name']


def test_bad_rows_fail_naming_file_and_line_before_the_model(s2d_data, tmp_path, monkeypatch, capsys):
    root, split = s2d_data['ferv39k']
    monkeypatch.setattr(evaluate, 'create_model', lambda *a, **k: pytest.fail('the model was built'))
    header, *rows = split.read_text().splitlines()
    cases = {
        'no_header': (rows, 'header of a path column'),
        'unknown_header': (['clip,emotion'] + rows, 'header of a path column'),
        'label_name': ([header, rows[0], 'Interview/Happy/0118,Happy'], 'expected "<frame_dir>,<label>"'),
        'three_columns': ([header, rows[0] + ',7'], 'expected "<frame_dir>,<label>"'),
        'missing_folder': ([header, rows[0], 'Interview/Sad/9999,5'], 'Interview/Sad/9999 is neither a frame folder'),
    }
    for case, (lines, message) in cases.items():
        bad = tmp_path / f'{case}.csv'
        bad.write_text('\n'.join(lines) + '\n')
        code = evaluate.main(['--model', 's2d.ferv39k', '--pretrained', '--data-root', str(root), '--list', str(bad),
                              '--output', str(tmp_path / case), '--workers', '0'])
        err = capsys.readouterr().err.strip()
        line = 1 if 'header' in message else len(lines)
        assert code != 0 and len(err.splitlines()) == 1 and f'{case}.csv:{line}:' in err and message in err, (case, err)


def test_logoformer_eval_gives_the_official_evaluation(s2d_data, tmp_path):
    official = RECORD['evaluation']
    assert official['landmark_state_dict'] == S2D_RECORD['landmark_state_dict']  # the authors' MobileFaceNet, whole
    assert 'embed_dim=64, depth=2, num_heads=2' in official['model_constructor']
    assert 'num_classes=7, num_frames=16' in official['model_constructor']  # the protocol's clip: its views unchanged
    checkpoint = save_s2d_checkpoint(tmp_path / 'split01_checkpoint-best.pth',
                                     fill_state_dict(official['model_state_dict']))
    landmark = write_s2d_landmark_file(tmp_path / 'mobilefacenet_model_best.pth.tar')
    folder = tmp_path / 'export'  # the two files through the commands: one folder (no flag builds a small form)
    assert hub.main(['export', '--model', 's2d.dfew_fold1', '--checkpoint', str(checkpoint), '--landmark-checkpoint',
                     str(landmark), '--out', str(folder), '--model-kwargs', *SMALL]) == 0
    root, _ = s2d_data['dfew']
    split = root.parent.parent / official['split_file']
    assert evaluate.main([
        '--checkpoint', str(folder), '--data-root', str(root), '--list', str(split), '--output', str(tmp_path / 'eval'),
        '--workers', '0', '--batch-size', '4']) == 0
    metrics = synth.check_official_evaluation(tmp_path / 'eval', official, [c['name'] for c in official['clips']])
    assert metrics['authors_protocol'] is True and metrics['test_protocol']['name'] == 's2d_dfew'


def test_split_files_saved_by_windows_tools_read_the_same(s2d_data, tmp_path):
    """A byte order mark and CRLF line ends (a CSV saved by Excel) change nothing; quoted fields are CSV's."""
    root, split = s2d_data['ferv39k']
    header, *rows = split.read_text().splitlines()
    windows = tmp_path / 'test.csv'
    windows.write_bytes(('\ufeff' + '\r\n'.join([header] + [f'"{row.split(",")[0]}",{row.split(",")[1]}'
                                                          for row in rows]) + '\r\n').encode('utf-8'))
    read = [(r.path, r.num_frames, r.label) for r in read_annotation_list(str(windows), str(root))[0]]
    assert read == [(r.path, r.num_frames, r.label) for r in read_annotation_list(str(split), str(root))[0]]
    assert [r[1:] for r in read] == [(frames, label) for _, frames, _, label in synth.S2D_FERV39K_CLIPS]
