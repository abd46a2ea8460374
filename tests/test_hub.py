"""hub/ tooling: metrics schema, export -> repo folder, verify, push (the HfApi network boundary is faked)."""
import contextlib
import hashlib
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

from logoformer_timm.weights import hub as hub_cli
from logoformer_timm.weights import manifest
from logoformer_timm.weights.card import MetricsFileError, model_card, validate_eval_metrics
from logoformer_timm.weights.publish import REPO_FILES, HubFolderError, export_folder
from logoformer_timm.weights.verify import verify_folder



def _load_script(name):
    spec = importlib.util.spec_from_file_location(f'hub_{name}', Path(__file__).resolve().parents[1] / 'hub' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_cli, verify_cli, push_cli = map(_load_script, ('export', 'verify', 'push'))

ARGS = dict(num_frames=2, img_size=32, local_window=(1, 2, 2), num_classes=5)
KWARGS = ['--model-kwargs', 'local_window=(1, 2, 2)']  # what the bare .pth checkpoint cannot tell
# true class i (rows) predicted as j (columns): recalls 3/4, 2/2, 1/1, 4/4, 1/2; accuracy 11/13
CONFUSION = [[3, 1, 0, 0, 0], [0, 2, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 4, 0], [1, 0, 0, 0, 1]]
METRICS = dict(
    uar=0.85, war=0.8462, per_class=dict(zip(('a', 'b', 'c', 'd', 'e'), (0.75, 1.0, 1.0, 1.0, 0.5))),
    confusion_matrix=CONFUSION, num_clips=13, protocol='synthetic clips, tests/test_hub.py', dataset='DFEW', fold=1)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A DDP-style .pth training checkpoint, its source model, and the folder hub/export.py made from it (in
    exports/, which export makes, as docs/weights.md's --out exports/NAME)."""
    torch.manual_seed(3)
    source = timm.create_model('logoformer_tiny', **ARGS).eval()
    root = tmp_path_factory.mktemp('hub')
    checkpoint = root / 'checkpoint.pth'
    torch.save({'epoch': 30, 'state_dict': {f'module.{k}': v for k, v in source.state_dict().items()}}, checkpoint)
    (root / 'metrics.json').write_text(json.dumps(METRICS))
    argv = ['--model', 'logoformer_tiny', '--checkpoint', str(checkpoint), '--out', str(root / 'exports' / 'repo'),
            '--tag', 'dfew_fold1', '--metrics', str(root / 'metrics.json'), '--train-dataset', 'DFEW',
            '--recipe', 'logoformer-train --dataset dfew --fold 1', '--model-kwargs', 'local_window=(1, 2, 2)']
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_cli.main(argv) == 0
    return source, checkpoint, root / 'exports' / 'repo', printed.getvalue()


def clip_for(model):
    return torch.rand(2, 3, model.num_frames, *model.img_size, generator=torch.Generator().manual_seed(0))


def logits(model, clip):
    with torch.no_grad():
        return model.eval()(clip)


@pytest.mark.parametrize('change, problem', [
    (dict(war=84.62), 'fraction in'),
    (dict(uar=0.80), r'mean of the per-class recalls is 0\.85'),
    (dict(per_class=dict(a=0.5, b=1.0, c=1.0, d=1.0, e=0.5)), r"per_class\['a'\] = 0\.5 but the confusion matrix gives 0\.75"),
    (dict(num_clips=14), 'equal to the confusion matrix sum'),
    (dict(confusion_matrix=CONFUSION[:4]), '5x5'),
    (dict(protocol=''), 'protocol'),
])
def test_metrics_schema_rejects_inconsistent_numbers(change, problem):
    assert validate_eval_metrics(dict(METRICS)) == METRICS
    with pytest.raises(MetricsFileError, match=problem):
        validate_eval_metrics({**METRICS, **change})


def test_export_writes_a_publishable_folder(exported):
    source, checkpoint, folder, out = exported
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPO_FILES)

    sha256 = hashlib.sha256((folder / 'model.safetensors').read_bytes()).hexdigest()
    assert f'sha256(model.safetensors) = {sha256}' in out
    namespace = dict(PUBLISHED={}, PublishedWeights=manifest.PublishedWeights)
    exec(out[out.index("PUBLISHED['"):], namespace)  # the printed entry is valid manifest code
    entry = namespace['PUBLISHED']['logoformer_tiny.dfew_fold1']
    assert (entry.sha256, entry.dataset, entry.fold, entry.uar, entry.war, entry.num_classes) == (
        sha256, 'DFEW', 1, 0.85, 0.8462, 5)
    assert entry.hf_hub_id == 'logoformer-timm/logoformer_tiny.dfew_fold1'

    weights = load_file(folder / 'model.safetensors')
    assert weights.keys() == source.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in source.state_dict().items())  # exported as trained
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'logoformer_tiny' and config['pretrained_cfg']['tag'] == 'dfew_fold1'
    assert {k: config['model_args'][k] for k in ('num_frames', 'img_size', 'local_window', 'num_classes')} == dict(
        num_frames=2, img_size=[32, 32], local_window=[1, 2, 2], num_classes=5)


def test_model_card_metadata_and_metrics_come_from_the_metrics_file(exported):
    folder = exported[2]
    card = (folder / 'README.md').read_text()
    _, front, body = card.split('---\n', 2)
    meta = yaml.safe_load(front)
    assert (meta['library_name'], meta['pipeline_tag'], meta['license']) == ('timm', 'video-classification', 'mit')
    assert meta['datasets'] == ['DFEW'] and meta['metrics'] == ['recall', 'accuracy']
    results = meta['model-index'][0]['results'][0]
    assert [(m['name'], m['value']) for m in results['metrics']] == [('UAR', 0.85), ('WAR', 0.8462)]
    assert '| UAR (mean per-class recall) | 85.00 |' in body and '| WAR (accuracy) | 84.62 |' in body
    assert 'a 75.00 | b 100.00 | c 100.00 | d 100.00 | e 50.00' in body
    assert "timm.create_model('hf-hub:logoformer-timm/logoformer_tiny.dfew_fold1', pretrained=True)" in body
    assert 'import logoformer_timm' in body and 'Trained on **DFEW** (as stated by the exporter).' in body
    # no package index serves logoformer-timm: the card says how to really install it
    assert 'pip install logoformer-timm' not in card and 'install it from a clone of its repository' in body


def test_hub_module_is_the_logoformer_hub_command():
    # `python -m logoformer_timm.weights.hub` used to print nothing and exit 0
    proc = subprocess.run([sys.executable, '-m', 'logoformer_timm.weights.hub'], capture_output=True, text=True)
    assert proc.returncode == 2 and 'logoformer-hub' in proc.stderr and '{export,verify,push}' in proc.stderr
    proc = subprocess.run([sys.executable, '-m', 'logoformer_timm.weights.hub', 'push', '--help'], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and 'usage: logoformer-hub push' in proc.stdout and '--repo-id' in proc.stdout



def test_hub_help_speaks_of_the_zoo_too(capsys):
    # the help used to speak of LOGO-Former weights only, though docs/zoo.md exports the zoo's files with it
    for argv in (['--help'], ['export', '--help']):
        with pytest.raises(SystemExit):
            hub_cli.main(argv)
    text = ' '.join(capsys.readouterr().out.split())
    assert 'publish the weights of LOGO-Former and of the DFER zoo (Former-DFER, MAE-DFER, DFER-CLIP, S2D)' in text
    assert "export Turn a training checkpoint or a zoo model's file into" in text
    assert 'a zoo tag such as former_dfer.dfew_fold1' in text

@pytest.mark.parametrize('train_dataset, statement', [
    (None, 'these weights were not shown to be trained on DFEW or FERV39K'),
    ('AffectNet frames', 'These weights were **not trained on DFEW or FERV39K**'),
])
def test_card_without_metrics_claims_nothing(exported, train_dataset, statement):
    card = model_card(exported[0], 'logoformer_tiny', train_dataset=train_dataset)
    meta = yaml.safe_load(card.split('---\n')[1])
    assert 'metrics' not in meta and 'model-index' not in meta
    assert 'No evaluation results were supplied for these weights, so none are reported.' in card
    assert statement in card and '%' not in card and 'UAR' not in card


def test_local_dir_logits_identical_to_source(exported):
    source, _, folder, _ = exported
    clip = clip_for(source)
    assert torch.equal(logits(timm.create_model(f'local-dir:{folder}', pretrained=True), clip), logits(source, clip))


def test_the_exported_cfg_carries_the_frame_count(exported):
    folder = exported[2]
    assert json.loads((folder / 'config.json').read_text())['pretrained_cfg']['num_frames'] == ARGS['num_frames']
    model = timm.create_model(f'local-dir:{folder}', pretrained=True)
    assert model.pretrained_cfg['num_frames'] == model.num_frames == ARGS['num_frames']


def test_export_refuses_bad_requests(exported, tmp_path):
    _, checkpoint, folder, _ = exported
    with pytest.raises(HubFolderError, match=r'num_frames=8 was requested but the weights were trained with num_frames=2'):
        export_folder('logoformer_tiny', checkpoint, tmp_path / 'a', model_kwargs=dict(num_frames=8))
    with pytest.raises(HubFolderError, match='already exists and is not empty'):
        export_folder('logoformer_tiny', checkpoint, folder)
    with pytest.raises(HubFolderError, match='registered clip model'):
        export_folder('resnet18', checkpoint, tmp_path / 'new' / 'b')
    assert not (tmp_path / 'new').exists()  # a refused request makes no folder
    (tmp_path / 'a_file').write_text('')
    with pytest.raises(ValueError, match=r'--out .*a_file/c: cannot create the folder, .*a_file is a file'):
        export_folder('logoformer_tiny', checkpoint, tmp_path / 'a_file' / 'c' / 'd')


def test_export_cli_user_error_is_one_line_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main(['--help'])
    assert exit_info.value.code == 0 and '--metrics' in capsys.readouterr().out
    argv = ['--model', 'logoformer_tiny', '--checkpoint', str(tmp_path / 'no.pth'), '--out', str(tmp_path / 'o')]
    assert export_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: Checkpoint not found:') and 'no.pth' in err and 'Traceback' not in err


def test_verify_float16_export_matches_the_rounded_source(exported, tmp_path, capsys):
    # (the float32 folder is verified by every push test)
    checkpoint = exported[1]
    half = export_folder('logoformer_tiny', checkpoint, tmp_path / 'half', dtype='float16',
                         model_kwargs=dict(local_window=(1, 2, 2))).folder
    assert {v.dtype for v in load_file(half / 'model.safetensors').values() if v.is_floating_point()} == {torch.float16}
    assert verify_cli.main([str(half), '--checkpoint', str(checkpoint), *KWARGS]) == 0
    out = capsys.readouterr().out
    assert 'local-dir: logits identical' in out and 'hf-hub: logits identical' in out and 'ready to push' in out


@pytest.fixture
def broken(exported, tmp_path):
    """A copy of the exported folder whose weights were changed after export."""
    folder = tmp_path / 'broken'
    shutil.copytree(exported[2], folder)
    weights = load_file(folder / 'model.safetensors')
    weights['head.bias'] = weights['head.bias'] + 1.
    save_file(weights, folder / 'model.safetensors')
    return folder


def test_verify_rejects_changed_weights_and_incomplete_folders(exported, broken, tmp_path):
    checkpoint = exported[1]
    with pytest.raises(HubFolderError, match=r'broken/model\.safetensors is not the weights of .*: head\.bias differs'):
        verify_folder(broken, checkpoint, dict(local_window=(1, 2, 2)))
    (broken / 'config.json').unlink()
    with pytest.raises(HubFolderError, match=r'broken is missing config\.json'):
        verify_folder(broken, checkpoint, dict(local_window=(1, 2, 2)))
    shutil.copy(exported[2] / 'config.json', broken / 'config.json')
    (broken / 'optimizer.pth').write_bytes(b'')
    with pytest.raises(HubFolderError, match='must not publish: optimizer.pth'):
        verify_folder(broken, checkpoint, dict(local_window=(1, 2, 2)))


def test_verify_compares_every_tensor_not_only_the_logits(exported, tmp_path, capsys):
    # one flipped bit in a tensor whose change the fixed clip does not reach: verify used to exit 0 and push publish it
    source, checkpoint, folder, _ = exported
    flipped = tmp_path / 'flipped'
    shutil.copytree(folder, flipped)
    weights = load_file(flipped / 'model.safetensors')
    weights['stem.conv1.weight'].view(-1).view(torch.uint8)[0] ^= 1
    save_file(weights, flipped / 'model.safetensors')
    clip = clip_for(source)
    assert torch.equal(logits(timm.create_model(f'local-dir:{flipped}', pretrained=True), clip), logits(source, clip))
    assert verify_cli.main([str(flipped), '--checkpoint', str(checkpoint), *KWARGS]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err, err
    assert re.search(r'flipped/model\.safetensors is not the weights of .*checkpoint\.pth \(after its key mapping\): '
                     r'stem\.conv1\.weight differs\. Export the folder again', err), err


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi at the network boundary; records calls and keeps the uploaded files."""

    def __init__(self, store: Path):
        self.store, self.calls = store, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(('create_repo', repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, allow_patterns, commit_message):
        self.calls.append(('upload_folder', repo_id, folder_path))
        for name in allow_patterns:
            shutil.copy(Path(folder_path) / name, self.store / name)
        return type('CommitInfo', (), dict(commit_url=f'https://huggingface.co/{repo_id}/commit/abc123'))()


def test_push_dry_run_by_default_then_uploads_exactly_the_repo_files(exported, tmp_path, capsys):
    _, checkpoint, folder, _ = exported
    api = FakeHfApi(tmp_path)
    argv = [str(folder), '--repo-id', 'logoformer-timm/logoformer_tiny.dfew_fold1', '--checkpoint', str(checkpoint),
            *KWARGS]
    assert push_cli.main(argv, api=api) == 0
    out = capsys.readouterr().out
    assert api.calls == [] and 'dry run: nothing uploaded' in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith('  ')] == list(REPO_FILES)

    assert push_cli.main(argv + ['--yes'], api=api) == 0
    assert api.calls == [
        ('create_repo', 'logoformer-timm/logoformer_tiny.dfew_fold1', dict(private=False, exist_ok=True)),
        ('upload_folder', 'logoformer-timm/logoformer_tiny.dfew_fold1', str(folder))]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REPO_FILES)
    assert all((tmp_path / n).read_bytes() == (folder / n).read_bytes() for n in REPO_FILES)
    assert 'commit: https://huggingface.co/logoformer-timm/logoformer_tiny.dfew_fold1/commit/abc123' in capsys.readouterr().out


def test_push_refuses_a_folder_that_fails_verification(exported, broken, tmp_path, capsys):
    api = FakeHfApi(tmp_path)
    argv = [str(broken), '--repo-id', 'logoformer-timm/x', '--checkpoint', str(exported[1]), '--yes', *KWARGS]
    assert push_cli.main(argv, api=api) == 2
    assert api.calls == [] and 'head.bias differs' in capsys.readouterr().err


def test_export_refuses_a_bare_file_without_its_architecture(exported, tmp_path):
    # the .pth cannot tell local_window=(1, 2, 2): exporting it with the defaults would change its logits
    with pytest.raises(HubFolderError, match=r'bare weights file.*checkpoint folder.*--model-kwargs'):
        export_folder('logoformer_tiny', exported[1], tmp_path / 'repo')
    assert not (tmp_path / 'repo').exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope='module')
def run_folder(exported, tmp_path_factory):
    """A training run's checkpoint folder (config.json records local_window) and an export of it."""
    from logoformer_timm.dfer.run_folder import _write_model_folder
    root = tmp_path_factory.mktemp('run')
    source = exported[0]
    (root / 'last').mkdir()
    _write_model_folder(str(root / 'last'), source, source.state_dict())
    assert export_cli.main(['--model', 'logoformer_tiny', '--checkpoint', str(root / 'last'), '--out',
                            str(root / 'repo')]) == 0
    return root / 'last', root / 'repo'


def test_export_from_a_run_folder_takes_its_architecture_and_verifies(exported, run_folder, capsys):
    checkpoint, folder = run_folder
    assert json.loads((folder / 'config.json').read_text())['model_args']['local_window'] == [1, 2, 2]
    clip = clip_for(exported[0])
    assert torch.equal(logits(timm.create_model(f'local-dir:{folder}', pretrained=True), clip),
                       logits(exported[0], clip))
    assert verify_cli.main([str(folder), '--checkpoint', str(checkpoint)]) == 0
    assert 'ready to push' in capsys.readouterr().out


def test_export_of_a_run_folder_needs_no_model_name(exported, run_folder, tmp_path, capsys):
    # --model used to be required although the folder's config.json names the architecture
    checkpoint, folder = run_folder
    assert export_cli.main(['--checkpoint', str(checkpoint), '--out', str(tmp_path / 'repo')]) == 0
    assert (tmp_path / 'repo' / 'model.safetensors').read_bytes() == (folder / 'model.safetensors').read_bytes()
    assert verify_cli.main([str(tmp_path / 'repo'), '--checkpoint', str(checkpoint)]) == 0
    capsys.readouterr()
    assert export_cli.main(['--checkpoint', str(exported[1]), '--out', str(tmp_path / 'file'), *KWARGS]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'checkpoint.pth does not name its architecture' in err and 'pass --model' in err


def test_the_loser_of_two_exports_to_one_folder_gets_one_line(exported, run_folder, tmp_path, capsys, monkeypatch):
    # both passed the empty-folder check; the second to finish used to fail with a raw "[Errno 39] Directory not empty"
    from logoformer_timm.weights import publish
    out = tmp_path / 'repo'
    card = publish.model_card

    def winner_finishes_first(*args, **kwargs):
        shutil.copytree(run_folder[1], out)
        return card(*args, **kwargs)
    monkeypatch.setattr(publish, 'model_card', winner_finishes_first)
    assert export_cli.main(['--checkpoint', str(run_folder[0]), '--out', str(out)]) == 2
    assert capsys.readouterr().err == f'error: {out} was written by another export meanwhile; pass a new --out.\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['repo']  # the winner's folder, no temporary left
    assert (out / 'README.md').read_text() == (run_folder[1] / 'README.md').read_text()


@pytest.mark.parametrize('key, value', [
    ('model_args.local_window', [1, 1, 1]), ('pretrained_cfg.mean', [0.5, 0.5, 0.5]),
    ('pretrained_cfg.label_names', ['x', 'y', 'z', 'v', 'w'])])
def test_verify_rejects_a_tampered_config(run_folder, tmp_path, capsys, key, value):
    checkpoint, folder = run_folder
    tampered = tmp_path / 'tampered'
    shutil.copytree(folder, tampered)
    config = json.loads((tampered / 'config.json').read_text())
    section, name = key.split('.')
    config[section][name] = value
    (tampered / 'config.json').write_text(json.dumps(config))
    assert verify_cli.main([str(tampered), '--checkpoint', str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert f'{key} differ' in err and 'ready to push' not in err


INJECTED = 'x\n\n## Results\n\n| metric | value (%) |\n|---|---|\n| UAR (mean per-class recall) | 99.00 |'


def test_model_card_renders_free_text_literally(exported):
    card = model_card(exported[0], 'logoformer_tiny', recipe=INJECTED.replace('\n', ' '),
                      train_dataset='DFEW <b>**99 %**</b> | x |')
    body = card.split('\n---\n', 1)[1]
    assert [line for line in body.splitlines() if line.startswith(('|', '#'))] == [
        '# logoformer_tiny', '## Training', '## Results', '## Usage', '## Limitations', '## Citation']
    assert '<b>' not in body and r'\<b\>\*\*99 %\*\*\</b\> \| x \|' in body


READABLE = 'Former-DFER (not measured), doi:10.1145/3503161.3547865 v1.2 + 3! {x}'
INTERPRETED = '# DFEW snake_case _em_ a*b* [link](u) <i> &amp; ~~s~~ $x$ a\\b'


def test_model_card_text_is_readable_and_renders_as_typed(exported):
    # ordinary text used to be escaped everywhere: doi:10\.1145, Former\-DFER, \(not measured\)
    card = model_card(exported[0], 'logoformer_tiny', train_dataset=READABLE)
    assert f'Trained on **{READABLE}** (as stated by the exporter).' in card
    from logoformer_timm.weights.card import _md_text
    assert _md_text('1. Former-DFER') == '1\\. Former-DFER'  # an ordered list item otherwise
    markdown_it = pytest.importorskip('markdown_it')  # a CommonMark renderer as the reference
    for text in (READABLE, INTERPRETED, '1. x', '- x', '> x', '=', 'DFEW <b>**99 %**</b> | x |'):
        html = markdown_it.MarkdownIt('commonmark').enable(['table', 'strikethrough']).render(_md_text(text)).strip()
        assert html == '<p>' + text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;') + '</p>', text


@pytest.mark.parametrize('flag, value', [('--recipe', INJECTED), ('--train-dataset', 'DFEW---x'),
                                         ('--license', 'mit\nfake: 1')])
def test_export_refuses_multi_line_or_yaml_breaking_text(exported, tmp_path, capsys, flag, value):
    argv = ['--model', 'logoformer_tiny', '--checkpoint', str(exported[1]), '--out', str(tmp_path / 'o'), *KWARGS,
            flag, value]
    assert export_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {flag} must be one line') and err.count('\n') == 1
    assert not (tmp_path / 'o').exists()


def test_verify_rejects_results_a_card_does_not_have_metrics_for(run_folder, tmp_path, capsys):
    checkpoint, folder = run_folder
    edited = tmp_path / 'edited'
    shutil.copytree(folder, edited)
    card = (edited / 'README.md').read_text()
    (edited / 'README.md').write_text(card.replace(
        'so none are reported.', 'so none are reported.\n\n| metric | value (%) |\n|---|---|\n| UAR | 99.00 |'))
    assert verify_cli.main([str(edited), '--checkpoint', str(checkpoint)]) == 2
    assert 'shows results but its front matter has none' in capsys.readouterr().err
