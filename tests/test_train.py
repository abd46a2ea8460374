"""logoformer-train / logoformer-eval end to end on generated frame-folder datasets: checkpoints, resume after a
kill, torchrun (gloo) against single-process evaluation, DFEW-style folds, metrics.json into hub/export.py."""
import json
import logging
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from logoformer_timm.dfer import evaluate as eval_cli
from logoformer_timm.dfer import run_folder
from logoformer_timm.dfer import train as train_cli
from logoformer_timm.dfer.synthetic import make_motion_dataset
from logoformer_timm.dfer.trainer import Trainer
from logoformer_timm.weights.loading import create_model

REPO = Path(__file__).resolve().parents[1]
# a tiny model and clip: 4 frames (2 segments x 2) of 16x16, 4 classes
TINY = ['--model', 'logoformer_tiny', '--img-size', '16', '--num-segments', '2', '--frames-per-segment', '2',
        '--num-classes', '4', '--workers', '0']


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('motion')
    # 12 training clips (divisible by 2 processes x batch 2 splits), 7 test clips (uneven over 2 ranks)
    make_motion_dataset(str(root), (('train', 3), ('test', 2)), ('right', 'left', 'down', 'up'), frames_range=(5, 12),
                        size=16, seed=1)
    lines = (root / 'test.txt').read_text().splitlines()
    (root / 'test.txt').write_text('\n'.join(lines[:7]) + '\n')
    return root


def _train_args(data, out, *extra):
    return [*TINY, '--data-root', str(data), '--train-list', str(data / 'train.txt'), '--val-list',
            str(data / 'test.txt'), '--output', str(out), '--batch-size', '4', '--hflip', '0', *extra]


def _log(out):
    return [json.loads(line) for line in (Path(out) / 'log.jsonl').read_text().splitlines()]


def _without_time(records):
    return [{k: v for k, v in r.items() if k != 'time'} for r in records]


def test_checkpoints_summary_and_eval_agree(tiny_data, tmp_path, capsys):
    out = tmp_path / 'run'
    assert train_cli.main(_train_args(tiny_data, out, '--epochs', '2', '--model-ema', '--model-ema-decay', '0.5')) == 0
    log = _log(out)
    assert [r['epoch'] for r in log] == [1, 2]
    assert log[0]['train_clips'] == 12 and log[0]['val_num_clips'] == 7
    summary = json.loads((out / 'summary.json').read_text())
    best = max(log, key=lambda r: (r['val_uar'], -r['epoch']))
    assert summary['last'] == dict(epoch=2, uar=log[1]['val_uar'], war=log[1]['val_war'])
    assert summary['best'] == dict(epoch=best['epoch'], uar=best['val_uar'], war=best['val_war'])
    assert 'optimistic' in summary['note'] and 'optimistic' in capsys.readouterr().out
    # the checkpoint folders: timm local-dir weights + a pickle-free training state with the compact-loss centres
    assert sorted(os.listdir(out / 'last')) == [
        'config.json', 'model.safetensors', 'train_state.json', 'train_state.safetensors']
    state = load_file(out / 'last' / 'train_state.safetensors')
    assert state['criterion.compact.centers'].shape == (4, 256)
    assert any(k.startswith('optimizer.') for k in state) and 'rng.torch' in state
    assert any(k.startswith('raw_model.') for k in state)  # EMA run: model.safetensors holds the EMA weights
    assert json.loads((out / 'best' / 'metrics.json').read_text())['epoch'] == best['epoch']
    # logoformer-eval on the best folder reproduces the validation metrics of that epoch
    assert eval_cli.main(['--checkpoint', str(out / 'best'), '--data-root', str(tiny_data), '--list',
                          str(tiny_data / 'test.txt'), '--output', str(tmp_path / 'eval'), '--num-segments', '2',
                          '--workers', '0', '--dataset', 'synthetic', '--fold', '1']) == 0
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['confusion_matrix'] == best['val_confusion_matrix']
    assert metrics['uar'] == pytest.approx(best['val_uar']) and metrics['num_clips'] == 7
    assert list(metrics['per_class']) == ['0', '1', '2', '3'] and metrics['fold'] == 1
    assert 'UAR' in capsys.readouterr().out


def test_authors_code_recipe_asl_dropouts_and_pool_size_train_a_step(tiny_data, tmp_path):
    """--loss asl is timm's AsymmetricLossSingleLabel(1, 2, 0.1); --model-kwargs reach the constructor."""
    from timm.loss import AsymmetricLossSingleLabel
    from logoformer_timm.dfer.distributed import DistInfo
    args = train_cli._parse_args(_train_args(
        tiny_data, tmp_path / 'asl', '--epochs', '1', '--loss', 'asl', '--compact-weight', '0', '--drop', '0.2',
        '--model-kwargs', 'attn_drop_rate=0.2', 'proj_drop_rate=0.2', 'global_pool_size=(2,1,1)', 'input_layout=BTCHW'))
    trainer = Trainer(args, str(tmp_path / 'asl'), args.train_list, args.val_list, DistInfo())
    asl = trainer.criterion.classification
    assert type(asl) is AsymmetricLossSingleLabel and (asl.gamma_pos, asl.gamma_neg, asl.eps) == (1, 2, 0.1)
    assert trainer.criterion.compact is None
    model = trainer.model
    assert model.global_pool_size == (2, 1, 1) and model.input_layout == 'BTCHW'
    attn = model.blocks[0].global_attn.attn
    assert attn.attn_drop.p == 0.2 and attn.proj_drop.p == 0.2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = trainer.train_epoch(0)  # BTCHW clips straight from the dataset: the transform emits the model's layout
    assert record['train_clips'] == 12 and 'train_ce' not in record
    assert record['train_asl'] > 0 and record['train_loss'] == pytest.approx(record['train_asl'])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_resume_after_a_kill_equals_the_uninterrupted_run(tiny_data, tmp_path):
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    assert train_cli.main(_train_args(tiny_data, full, '--epochs', '2')) == 0
    # a real interruption: SIGKILL the training process once epoch 1 is checkpointed, in the middle of epoch 2
    proc = subprocess.Popen(
        [sys.executable, '-m', 'logoformer_timm.dfer.train', *_train_args(tiny_data, killed, '--epochs', '2')],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))
    state = killed / 'last' / 'train_state.json'
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads(state.read_text())['epoch'] == 1
    assert train_cli.main(['--resume', str(killed)]) == 0  # the saved arguments are reused
    assert _without_time(_log(killed)) == _without_time(_log(full))
    for folder in ('last', 'best'):
        a, b = load_file(full / folder / 'model.safetensors'), load_file(killed / folder / 'model.safetensors')
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = load_file(full / 'last' / 'train_state.safetensors'), load_file(killed / 'last' / 'train_state.safetensors')
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_two_processes_agree_with_single_process_evaluation(tiny_data, tmp_path):
    out = tmp_path / 'ddp'
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    # own process group, so that a hang kills the workers too instead of leaving them waiting on gloo
    proc = subprocess.Popen(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
         '-m', 'logoformer_timm.dfer.train', *_train_args(tiny_data, out, '--epochs', '1', '--device', 'cpu')],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f'torchrun did not finish in 300 s: {stderr[-3000:]}')
    assert proc.returncode == 0, stderr[-3000:]
    record = _log(out)[0]
    assert record['train_clips'] == 12  # both ranks' clips, counted once
    # the 7 validation clips are split 4 + 3 over the ranks without padding: the reduced metrics equal
    # a single-process evaluation of the same weights
    assert eval_cli.main(['--checkpoint', str(out / 'last'), '--data-root', str(tiny_data), '--list',
                          str(tiny_data / 'test.txt'), '--output', str(tmp_path / 'eval'), '--num-segments', '2',
                          '--workers', '0']) == 0
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['num_clips'] == record['val_num_clips'] == 7
    assert metrics['confusion_matrix'] == record['val_confusion_matrix']
    assert metrics['war'] == pytest.approx(record['val_war'])


def test_folds_write_per_fold_runs_and_a_mean_table(tiny_data, tmp_path):
    lists = tmp_path / 'lists'
    for fold in (1, 2):
        (lists / f'set_{fold}').mkdir(parents=True)
        for name in ('train', 'test'):
            (lists / f'set_{fold}' / f'{name}.txt').write_text((tiny_data / f'{name}.txt').read_text())
    out = tmp_path / 'folds'
    args = [*TINY, '--data-root', str(tiny_data), '--train-list', str(lists / 'set_{fold}' / 'train.txt'),
            '--val-list', str(lists / 'set_{fold}' / 'test.txt'), '--folds', '1,2', '--epochs', '1',
            '--batch-size', '4', '--output', str(out)]
    assert train_cli.main(args) == 0
    results = json.loads((out / 'folds.json').read_text())
    assert sorted(results) == ['1', '2'] and (out / 'fold_1' / 'last').is_dir() and (out / 'fold_2' / 'best').is_dir()
    table = (out / 'folds.md').read_text()
    mean_uar = sum(results[f]['last']['uar'] for f in results) / 2
    assert f'| mean | {100 * mean_uar:.2f} |' in table and 'optimistic' in table


@pytest.mark.parametrize('cli', [train_cli, eval_cli], ids=['train', 'eval'])
@pytest.mark.parametrize('cores, workers', [(2, 2), (16, 4), (None, 1)])
def test_workers_default_to_at_most_the_cpu_count(monkeypatch, cli, cores, workers):
    # 4 workers on a 2-core machine make every DataLoader warn about oversubscription
    monkeypatch.setattr(os, 'cpu_count', lambda: cores)
    assert cli.build_parser().get_default('workers') == workers


def test_eval_metrics_round_trip_into_hub_export(tiny_data, tmp_path):
    export = REPO / 'hub' / 'export.py'
    if not export.exists():
        pytest.skip('hub/export.py is not there yet')
    out = tmp_path / 'run'
    assert train_cli.main(_train_args(tiny_data, out, '--epochs', '1')) == 0
    # every class needs clips for a model card: evaluate on the training list (8 clips of each class)
    assert eval_cli.main(['--checkpoint', str(out / 'last'), '--data-root', str(tiny_data), '--list',
                          str(tiny_data / 'train.txt'), '--output', str(tmp_path / 'eval'), '--num-segments', '2',
                          '--workers', '0', '--dataset', 'synthetic']) == 0
    exported = tmp_path / 'hub_repo'
    main = runpy.run_path(str(export))['main']
    assert main(['--model', 'logoformer_tiny', '--checkpoint', str(out / 'last'),
                 '--out', str(exported), '--metrics', str(tmp_path / 'eval' / 'metrics.json')]) == 0
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    card = (exported / 'README.md').read_text()
    assert f'{100 * metrics["uar"]:.2f}' in card


@pytest.mark.parametrize('change, message', [
    (lambda a: a[:a.index('--train-list')] + a[a.index('--train-list') + 2:], 'missing --train-list'),
    (lambda a: [x.replace('train.txt', 'nope.txt') for x in a], 'Annotation list not found'),
    (lambda a: a + ['--folds', '1,2'], 'needs "{fold}"'),
    (lambda a: a + ['--num-classes', '2'], r'label [23] is outside \[0, 2\)'),
    (lambda a: a + ['--loss', 'asl', '--smoothing', '0.1'], "cannot be combined with loss 'asl'.*--smoothing 0"),
    (lambda a: a + ['--model-kwargs', 'drop_rate=0.2'], '--model-kwargs drop_rate=...: set it with --drop'),
])
def test_user_errors_exit_2_with_a_message(tiny_data, tmp_path, capsys, change, message):
    assert train_cli.main(change(_train_args(tiny_data, tmp_path / 'bad', '--epochs', '1'))) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Traceback' not in err
    import re
    assert re.search(message, err), err


@pytest.mark.parametrize('name, content, message', [
    ('cut.safetensors', b'\x10\x00\x00\x00\x00\x00\x00\x00{"a', 'not a readable safetensors file'),
    ('junk.pth', b'not a torch file', 'cannot be read as a weights-only torch checkpoint'),
])
def test_corrupt_checkpoint_is_a_user_error(tiny_data, tmp_path, capsys, name, content, message):
    bad = tmp_path / name
    bad.write_bytes(content)
    args = ['--model', 'logoformer_tiny', '--checkpoint', str(bad), '--data-root', str(tiny_data), '--list',
            str(tiny_data / 'test.txt'), '--output', str(tmp_path / 'eval'), '--num-segments', '2', '--workers', '0']
    assert eval_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Traceback' not in err and name in err and message in err, err
    assert train_cli.main(_train_args(tiny_data, tmp_path / 'run', '--epochs', '1', '--checkpoint', str(bad))) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope='module')
def four_class_weights(tmp_path_factory):
    """A 4-class tiny model saved as a bare .safetensors file and as a checkpoint folder (config.json)."""
    import timm
    from safetensors.torch import save_file
    root = tmp_path_factory.mktemp('weights')
    model = timm.create_model('logoformer_tiny', num_classes=4, num_frames=4, img_size=16)
    save_file(model.state_dict(), root / 'four.safetensors')
    (root / 'folder').mkdir()
    run_folder._write_model_folder(str(root / 'folder'), model, model.state_dict())
    return root


def _eval_args(data, out, *extra):
    return ['--data-root', str(data), '--list', str(data / 'test.txt'), '--output', str(out), '--num-segments', '2',
            '--workers', '0', *extra]


@pytest.mark.parametrize('checkpoint, extra', [
    ('four.safetensors', ['--model', 'logoformer_tiny', '--img-size', '16', '--num-classes', '7']),
    ('folder', ['--num-classes', '7']),
])
def test_eval_never_replaces_the_trained_head(tiny_data, four_class_weights, tmp_path, capsys, checkpoint, extra):
    args = _eval_args(tiny_data, tmp_path / 'eval', '--checkpoint', str(four_class_weights / checkpoint), *extra)
    assert eval_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert 'trained for 4 classes but --num-classes 7' in err and 'never replaces' in err
    assert not (tmp_path / 'eval').exists()


def test_eval_of_a_bare_file_keeps_its_class_count(tiny_data, four_class_weights, tmp_path, capsys):
    args = _eval_args(tiny_data, tmp_path / 'eval', '--checkpoint', str(four_class_weights / 'four.safetensors'),
                      '--model', 'logoformer_tiny', '--img-size', '16')
    assert eval_cli.main(args) == 0  # no --num-classes: the file's own 4-class head, not a fresh 7-class one
    assert len(json.loads((tmp_path / 'eval' / 'metrics.json').read_text())['per_class']) == 4


def test_eval_names_the_protocol_changes_once(tiny_data, four_class_weights, tmp_path, capsys):
    args = _eval_args(tiny_data, tmp_path / 'eval', '--checkpoint', str(four_class_weights / 'folder'))
    assert eval_cli.main(args) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert "(protocol logoformer; this project's protocol for LOGO-Former, changed: size=16x16, num_segments=2)" in line


def test_eval_refuses_an_untrained_model(tiny_data, tmp_path, capsys):
    assert eval_cli.main(_eval_args(tiny_data, tmp_path / 'eval', '--model', 'logoformer_tiny')) == 2
    assert 'evaluating an untrained model measures nothing' in capsys.readouterr().err


def test_fine_tuning_makes_a_new_head_and_says_so(four_class_weights, caplog):
    model = create_model('logoformer_tiny', str(four_class_weights / 'four.safetensors'), num_classes=3,
                         new_head=True, num_frames=4, img_size=16)
    assert model.num_classes == 3
    assert 'classifier for 4 classes is replaced by a new, untrained one for 3 classes' in caplog.text


class Killed(Exception):
    """Stands in for a SIGKILL at one exact step of the checkpoint swap."""


def _kill_at(monkeypatch, func, name, nth, partial=False):
    """Make ``os.rename`` / ``shutil.rmtree`` of a folder called ``name`` raise at its ``nth`` call.

    ``partial``: the killed ``rmtree`` had already deleted ``train_state.json`` (removal order is arbitrary).
    """
    import shutil
    module = os if func == 'rename' else shutil
    original, seen = getattr(module, func), []

    def faulty(path, *args, **kwargs):
        if os.path.basename(str(path)) == name:
            seen.append(path)
            if len(seen) == nth:
                if partial:
                    os.remove(os.path.join(path, 'train_state.json'))
                raise Killed(f'{func} {name} #{nth}')
        return original(path, *args, **kwargs)
    monkeypatch.setattr(module, func, faulty)


@pytest.fixture(scope='module')
def full_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('full') / 'run'
    assert train_cli.main(_train_args(tiny_data, out, '--epochs', '2')) == 0
    return out


def _assert_same_run(a, b):
    assert _without_time(_log(a)) == _without_time(_log(b))
    for folder in ('last', 'best'):
        x, y = load_file(a / folder / 'model.safetensors'), load_file(b / folder / 'model.safetensors')
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# epoch 1 saves best then last (renames: .best.tmp, .last.tmp); epoch 2 (not best on this data) renames
# last -> last.old, .last.tmp -> last, then removes last.old
@pytest.mark.parametrize('kill, resumed_after', [
    (('rename', '.best.tmp', 1), 1),  # both epoch-1 folders complete in their .tmp, nothing swapped in yet
    (('rename', '.last.tmp', 2), 2),  # epoch 2: between the two renames (only last.old and .last.tmp exist)
    (('rmtree', 'last.old', 1, True), 2),  # epoch 2: inside the removal of last.old
])
def test_resume_finds_the_newest_complete_checkpoint_in_every_kill_window(
        tiny_data, full_run, tmp_path, monkeypatch, caplog, kill, resumed_after):
    caplog.set_level(logging.INFO, logger='logoformer_timm.dfer')
    out = tmp_path / 'run'
    _kill_at(monkeypatch, *kill)
    with pytest.raises(Killed):
        train_cli.main(_train_args(tiny_data, out, '--epochs', '2'))
    monkeypatch.undo()
    assert train_cli.main(['--resume', str(out)]) == 0
    assert f'resumed {out} after epoch {resumed_after}' in caplog.text
    _assert_same_run(out, full_run)
    assert sorted(os.listdir(out)) == ['.lock', 'args.json', 'best', 'last', 'log.jsonl', 'summary.json']


def test_a_second_kill_while_resuming_loses_nothing(tiny_data, full_run, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger='logoformer_timm.dfer')
    out = tmp_path / 'run'
    _kill_at(monkeypatch, 'rename', '.last.tmp', 2)  # epoch 2 between the renames
    with pytest.raises(Killed):
        train_cli.main(_train_args(tiny_data, out, '--epochs', '2'))
    monkeypatch.undo()
    _kill_at(monkeypatch, 'rmtree', 'last.old', 1, partial=True)  # the resumed run is killed removing last.old
    with pytest.raises(Killed):
        train_cli.main(['--resume', str(out)])
    monkeypatch.undo()
    caplog.clear()
    assert train_cli.main(['--resume', str(out)]) == 0
    assert f'resumed {out} after epoch 2' in caplog.text
    _assert_same_run(out, full_run)


def test_resume_drops_a_torn_last_log_line(tiny_data, full_run, tmp_path, caplog):
    out = tmp_path / 'run'
    assert train_cli.main(_train_args(tiny_data, out, '--epochs', '2')) == 0
    (out / 'summary.json').unlink()  # as if killed while writing epoch 3's line
    with open(out / 'log.jsonl', 'a', encoding='utf-8') as f:
        f.write('{"epoch": 3, "lr": 0.0')
    assert train_cli.main(['--resume', str(out), '--epochs', '2']) == 0
    assert 'dropped its torn last line' in caplog.text
    assert _without_time(_log(out)) == _without_time(_log(full_run))


@pytest.mark.parametrize('edit', ['delete', 'first line only'])
def test_resume_refuses_a_log_that_lost_epochs(tiny_data, full_run, tmp_path, capsys, edit):
    # it used to resume and write a summary.json whose best epoch disagreed with best/
    out = tmp_path / 'run'
    shutil.copytree(full_run, out)
    (out / 'summary.json').unlink()
    (out / '.lock').unlink()
    log = out / 'log.jsonl'
    if edit == 'delete':
        log.unlink()
    else:
        log.write_text(log.read_text().splitlines()[0] + '\n')
    assert train_cli.main(['--resume', str(out), '--epochs', '3']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert 'but the checkpoint is after epoch 2: the log was deleted or edited' in err
    assert not (out / 'summary.json').exists()


def test_resume_checks_the_log_of_a_finished_run_too(tiny_data, full_run, tmp_path, capsys, caplog):
    # a finished run used to be accepted without reading its log
    out = tmp_path / 'run'
    shutil.copytree(full_run, out)
    log = out / 'log.jsonl'
    complete = log.read_text()
    log.write_text(complete.splitlines()[0] + '\n')
    assert train_cli.main(['--resume', str(out)]) == 2
    assert 'holds epochs [1] but the checkpoint is after epoch 2: the log was deleted or edited' in _one_error_line(capsys)
    log.write_text(complete + '{"epoch": 3, "lr": 0.0')
    assert train_cli.main(['--resume', str(out)]) == 0
    assert 'dropped its torn last line' in caplog.text and log.read_text() == complete


def test_a_redirected_log_gets_lines_not_progress_bars(tiny_data, tmp_path):
    # the progress bars used to write hundreds of carriage returns into a redirected log
    env = dict(os.environ, PYTHONPATH=str(REPO))
    train = subprocess.run(
        [sys.executable, '-m', 'logoformer_timm.dfer.train', *_train_args(tiny_data, tmp_path / 'run', '--epochs', '2')],
        capture_output=True, text=True, env=env, timeout=600)
    evaluation = subprocess.run(
        [sys.executable, '-m', 'logoformer_timm.dfer.evaluate', '--checkpoint', str(tmp_path / 'run' / 'last'),
         '--data-root', str(tiny_data), '--list', str(tiny_data / 'test.txt'), '--output', str(tmp_path / 'eval'),
         '--num-segments', '2', '--workers', '0'], capture_output=True, text=True, env=env, timeout=600)
    assert train.returncode == 0 and evaluation.returncode == 0, train.stderr + evaluation.stderr
    assert train.stderr == evaluation.stderr == ''
    assert [line.split('  ')[0] for line in train.stdout.splitlines() if line.startswith('epoch')] == [
        'epoch 1/2', 'epoch 2/2']


@pytest.mark.parametrize('preset, spin_count', [(None, '0'), ('ACTIVE', '30000000000')], ids=['default', 'user-set'])
def test_the_commands_openmp_threads_sleep_instead_of_spinning(preset, spin_count):
    # GNU OpenMP's threads spin ~3 ms at every barrier by default; beside 4 busy processes on 2 cores the spinning
    # stalled the training demo's epochs for minutes (benchmarks/results/under_load.md). A value the user set wins.
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}
    env.update(PYTHONPATH=str(REPO), OMP_DISPLAY_ENV='VERBOSE', **({'OMP_WAIT_POLICY': preset} if preset else {}))
    shown = subprocess.run([sys.executable, '-m', 'logoformer_timm.dfer.train', '--help'], capture_output=True,
                           text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", shown.stderr)  # printed by GNU OpenMP when it loads
    if spin is None:
        pytest.skip('torch does not use GNU OpenMP here')
    assert spin.group(1) == spin_count


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err
    return err


def test_no_command_replaces_earlier_results_without_overwrite(tiny_data, full_run, tmp_path, capsys):
    # logoformer-train used to replace a finished run's log, summary and checkpoints, logoformer-eval a metrics.json
    out = tmp_path / 'run'
    shutil.copytree(full_run, out)
    before = {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}
    assert train_cli.main(_train_args(tiny_data, out, '--epochs', '1')) == 2
    err = _one_error_line(capsys)
    assert f'--output {out} already holds args.json, best, last, log.jsonl, summary.json;' in err
    assert f'pass --resume {out} to continue the run, a new --output, or --overwrite' in err
    assert {p: p.read_bytes() for p in out.rglob('*') if p.is_file()} == before
    unrelated = tmp_path / 'notes'
    unrelated.mkdir()
    (unrelated / 'paper.pdf').write_text('mine')
    assert train_cli.main(_train_args(tiny_data, unrelated, '--epochs', '1')) == 2
    assert f'--output {unrelated} already holds paper.pdf; nothing is replaced without --overwrite' in _one_error_line(capsys)
    assert train_cli.main(['--resume', str(out), '--overwrite']) == 2
    assert '--resume continues the run in its folder and --overwrite deletes it' in _one_error_line(capsys)
    # --overwrite: the earlier run is deleted first, other files are left alone
    (out / 'paper.pdf').write_text('mine')
    assert train_cli.main(_train_args(tiny_data, out, '--epochs', '1', '--overwrite')) == 0
    assert [r['epoch'] for r in _log(out)] == [1] and (out / 'paper.pdf').read_text() == 'mine'
    assert json.loads((out / 'summary.json').read_text())['epochs'] == 1
    assert 'overwrite' not in json.loads((out / 'args.json').read_text())
    capsys.readouterr()

    evaluation = ['--checkpoint', str(out / 'last'), '--data-root', str(tiny_data), '--list',
                  str(tiny_data / 'test.txt'), '--output', str(tmp_path / 'eval'), '--num-segments', '2', '--workers', '0']
    (tmp_path / 'eval').mkdir()
    (tmp_path / 'eval' / 'metrics.json').write_text('{"earlier": true}')
    assert eval_cli.main(evaluation) == 2
    assert f'--output {tmp_path / "eval"} already holds metrics.json; nothing is replaced' in _one_error_line(capsys)
    assert (tmp_path / 'eval' / 'metrics.json').read_text() == '{"earlier": true}'
    assert eval_cli.main(evaluation + ['--overwrite']) == 0
    assert json.loads((tmp_path / 'eval' / 'metrics.json').read_text())['num_clips'] == 7


def test_a_second_run_on_the_same_output_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / 'run'
    with run_folder.output_lock(str(out)):  # a live run holds the folder
        assert train_cli.main(_train_args(tiny_data, out, '--epochs', '1')) == 2
        err = capsys.readouterr().err
        assert err.startswith(f'error: {out} is in use by a running logoformer-train (pid {os.getpid()} on ')
        assert os.listdir(out) == ['.lock']  # nothing of the second run was written
        assert train_cli.main(['--resume', str(out)]) == 2


def test_a_killed_run_does_not_leave_its_output_locked(tmp_path):
    out = tmp_path / 'run'
    code = ('import os, signal, sys; from logoformer_timm.dfer.run_folder import output_lock; '
            'output_lock(sys.argv[1]).__enter__(); os.kill(os.getpid(), signal.SIGKILL)')
    proc = subprocess.run([sys.executable, '-c', code, str(out)], env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == -signal.SIGKILL and (out / '.lock').read_text().startswith('pid ')
    with run_folder.output_lock(str(out)):
        assert (out / '.lock').read_text().startswith(f'pid {os.getpid()} ')


def test_eval_missing_checkpoint_says_the_path_does_not_exist(tmp_path, capsys):
    # without --model it used to say "Pass --model NAME", as if the path were fine
    (tmp_path / 'test.txt').write_text('')  # the list is read first
    args = ['--checkpoint', str(tmp_path / 'does' / 'not' / 'exist'), '--data-root', str(tmp_path), '--list',
            str(tmp_path / 'test.txt'), '--output', str(tmp_path / 'eval')]
    assert eval_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'does/not/exist' in err and 'no such file or folder' in err, err
    assert not (tmp_path / 'eval').exists()


def test_eval_precision_flags(tiny_data, tmp_path, capsys):
    """--precision bf16 evaluates every clip; fp16 on a CPU without it, and --amp with --precision, are user errors."""
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = timm.create_model('logoformer_tiny', num_classes=4, num_frames=4, img_size=16)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / 'w.safetensors'))
    args = ['--model', 'logoformer_tiny', '--checkpoint', str(tmp_path / 'w.safetensors'), '--num-classes', '4',
            '--img-size', '16', '--data-root', str(tiny_data), '--list', str(tiny_data / 'test.txt'),
            '--num-segments', '2', '--workers', '0']
    assert eval_cli.main(args + ['--output', str(tmp_path / 'bf16'), '--precision', 'bf16']) == 0
    metrics = json.loads((tmp_path / 'bf16' / 'metrics.json').read_text())
    assert metrics['num_clips'] == 7 and sum(map(sum, metrics['confusion_matrix'])) == 7
    capsys.readouterr()
    assert eval_cli.main(args + ['--output', str(tmp_path / 'x'), '--amp', '--precision', 'bf16']) == 2
    assert 'give one of them, not both' in capsys.readouterr().err
    if not torch.cpu._is_amx_fp16_supported():
        assert eval_cli.main(args + ['--output', str(tmp_path / 'x'), '--precision', 'fp16', '--device', 'cpu']) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: fp16 on this CPU would be emulated') and 'Traceback' not in err


@pytest.mark.parametrize('cli', [train_cli, eval_cli])
def test_help_never_prints_default_none(cli):
    # cli.HelpFormatter: a None default is said in words, not printed as "(default: None)"
    text = cli.build_parser().format_help()
    assert '(default: None)' not in text and '(default:' in text, text
