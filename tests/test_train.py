"""logoformer-train / logoformer-eval end to end on generated frame-folder datasets: checkpoints, resume after a
kill, torchrun (gloo) against single-process evaluation, DFEW-style folds, metrics.json into hub/export.py."""
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from logoformer_timm import eval as eval_cli
from logoformer_timm import train as train_cli
from logoformer_timm.data.synthetic import make_motion_dataset

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
    from logoformer_timm.eval import DistInfo
    args = train_cli._parse_args(_train_args(
        tiny_data, tmp_path / 'asl', '--epochs', '1', '--loss', 'asl', '--compact-weight', '0', '--drop', '0.2',
        '--model-kwargs', 'attn_drop_rate=0.2', 'proj_drop_rate=0.2', 'global_pool_size=(2,1,1)', 'input_layout=BTCHW'))
    trainer = train_cli.Trainer(args, str(tmp_path / 'asl'), args.train_list, args.val_list, DistInfo())
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
        [sys.executable, '-m', 'logoformer_timm.train', *_train_args(tiny_data, killed, '--epochs', '2')],
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
         '-m', 'logoformer_timm.train', *_train_args(tiny_data, out, '--epochs', '1', '--device', 'cpu')],
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
    assert main(['--model', 'logoformer_tiny', '--checkpoint', str(out / 'last' / 'model.safetensors'),
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
