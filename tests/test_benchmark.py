"""The benchmark harness: argument parsing, CLI output files, sweeps, OOM retry and device errors."""
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from logoformer_timm import bench
from logoformer_timm.bench import BenchmarkError, ModelSpec
from logoformer_timm.bench import count_flops

REPO = Path(__file__).resolve().parents[1]
# a narrow one-block model on a tiny clip (2 frames of 32x32: a 2x2x2 token grid) keeps every run short
SMALL_KWARGS = dict(embed_dim=64, num_heads=2, depth=1)
TINY = ['--model', 'logoformer_tiny', '--model-kwargs', 'embed_dim=64', 'num_heads=2', 'depth=1',
        '--num-frames', '2', '--img-size', '32', '-b', '2', '--num-warm-iter', '0', '--num-bench-iter', '1',
        '--gemm-size', '512', '--no-isolate']
LABEL = 'logoformer_tiny[embed_dim=64,num_heads=2,depth=1]'
DOCUMENTED = ['model', 'param_count', 'infer_gmacs', 'infer_gflops', 'train_gmacs', 'infer_samples_per_sec',
              'infer_step_time', 'infer_step_time_p10', 'infer_step_time_p90', 'infer_batch_size', 'infer_img_size',
              'infer_frames', 'infer_peak_mem_mb', 'infer_achieved_gflops_per_sec', 'infer_peak_fraction',
              'train_samples_per_sec', 'train_step_time', 'train_batch_size', 'train_peak_mem_mb', 'flop_counter',
              'mem_method', 'gemm_gflops_per_sec', 'device', 'device_name', 'threads', 'precision',
              'torch_version', 'timm_version', 'infer_load_avg_1m']


def test_model_kwargs_are_parsed_sensibly():
    kwargs = bench.parse_model_kwargs(
        ['block_types=joint', 'local_window=2,4,4', 'block_types2=local,global', 'drop_rate=0.1', 'qkv_bias=True',
         'depth=2'])
    assert kwargs == dict(block_types='joint', local_window=(2, 4, 4), block_types2=('local', 'global'),
                          drop_rate=0.1, qkv_bias=True, depth=2)
    with pytest.raises(BenchmarkError, match='key=value'):
        bench.parse_model_kwargs(['joint'])


def test_models_by_wildcard_and_unknown_name():
    names = [s.name for s in bench.resolve_models(['logoformer_*'], dict(depth=1))]
    assert sorted(names) == ['logoformer_base', 'logoformer_small', 'logoformer_tiny']
    spec = bench.resolve_models(['logoformer_tiny'], dict(block_types='joint'))[0]
    assert spec.label == 'logoformer_tiny[block_types=joint]'
    # a printed label is accepted back as a model, with its own kwargs
    spec = bench.resolve_models(['logoformer_base[block_types=joint,local_window=2,4,4]'], dict(depth=1))[0]
    assert (spec.name, spec.kwargs) == ('logoformer_base', dict(depth=1, block_types='joint', local_window=(2, 4, 4)))
    assert [s.name for s in bench.resolve_models(['torchvision/r3d_18'])] == ['torchvision/r3d_18']
    with pytest.raises(BenchmarkError, match='no model matches'):
        bench.resolve_models(['not_a_model_xyz'])


def test_count_model_matches_counter_and_params():
    spec = ModelSpec('logoformer_tiny', SMALL_KWARGS)
    count = bench.count_model(spec, 2, 32)
    model = bench.build_model(spec, 2, 32)
    assert count.param_count == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert count.infer.flops == count_flops(model, (1, 3, 2, 32, 32)).flops
    assert sum(count.detail.values()) == pytest.approx(count.infer.gmacs)


def test_percentiles_match_statistics():
    values = [5., 1., 9., 3., 7., 2., 8.]
    q = statistics.quantiles(values, n=10, method='inclusive')
    assert bench.percentile(values, 10) == pytest.approx(q[0])
    assert bench.percentile(values, 90) == pytest.approx(q[-1])
    assert bench.percentile(values, 50) == statistics.median(values)


def test_time_steps_runs_warmup_then_timed_steps():
    calls = []
    times = bench.time_steps(lambda: calls.append(1), 3, 4, torch.device('cpu'))
    assert len(calls) == 7 and len(times) == 4 and all(t >= 0 for t in times)


def _run_cli(tmp_path, fmt, mode='both'):
    path = tmp_path / f'results.{fmt}'
    lines = []
    rows = bench.run([*TINY, '--bench', mode, '--detail', '--results-file', str(path), '--results-format', fmt],
                     log=lines.append)
    return rows, path, '\n'.join(lines)


def test_cli_writes_csv_json_md(tmp_path):
    rows, path, out = _run_cli(tmp_path, 'csv')
    assert LABEL in out and 'GMACs' in out and 'FlopCounterMode' in out and 'stem' in out
    assert 'peak MB' in out and 'method: eager inference forward' in out and 'torch.profiler' in out
    with open(path) as f:
        records = list(csv.DictReader(f))
    assert len(records) == 1
    for column in DOCUMENTED:
        assert records[0][column] != '', column
    assert float(records[0]['infer_gflops']) == pytest.approx(2 * float(records[0]['infer_gmacs']), rel=1e-3)
    assert records[0]['infer_frames'] == '2' and records[0]['infer_img_size'] == '32'
    assert records[0]['device'] == 'cpu' and records[0]['torch_version'] == torch.__version__

    _, path, _ = _run_cli(tmp_path, 'json', 'inference')
    data = json.loads(path.read_text())
    assert data['command'].startswith('logoformer-bench ')
    result = data['results'][0]
    assert set(c for c in DOCUMENTED if not c.startswith('train')) <= set(result)
    assert result['infer_samples_per_sec'] == pytest.approx(2 / (result['infer_step_time'] / 1e3))
    assert result['infer_peak_fraction'] == pytest.approx(
        result['infer_achieved_gflops_per_sec'] / result['gemm_gflops_per_sec'])
    assert sum(result['infer_gmacs_by_part'].values()) == pytest.approx(result['infer_gmacs'], abs=0.01)
    assert set(result['infer_peak_mem_mb_by_part']) | {'other'} == set(result['infer_ms_by_part'])

    _, path, _ = _run_cli(tmp_path, 'md', 'inference')
    text = path.read_text()
    assert text.startswith('Command: `logoformer-bench ') and '## Summary' in text
    table = [line for line in text.split('## All columns')[1].splitlines() if line.startswith('|')]
    header = [c.strip() for c in table[0].strip('|').split('|')]
    assert set(c for c in DOCUMENTED if not c.startswith('train')) <= set(header)
    assert len(table) == 3 and table[1].startswith('|---')
    assert len(table[2].strip('|').split('|')) == len(header)


def test_a_fraction_above_the_matmul_peak_is_flagged_not_reported(monkeypatch):
    # a peak measured too low (noise, other threads) once made rows read 225 % of it
    monkeypatch.setattr(bench.cli, 'gemm_peak', lambda *a, **k: 1e-6)
    lines = []
    rows = bench.run(TINY, log=lines.append)
    out = '\n'.join(lines)
    assert rows[0]['infer_peak_fraction'] is None and rows[0]['gemm_gflops_per_sec'] == 1e-6
    assert 'measurement problem' in rows[0]['infer_warning'] and 'measurement problem' in out
    assert 're-measured at the end' in out
    row = dict(infer_achieved_gflops_per_sec=50., train_achieved_gflops_per_sec=150.)
    bench.set_peak_fractions([row], 100.)
    assert row['infer_peak_fraction'] == 0.5 and row['infer_warning'] == ''
    assert row['train_peak_fraction'] is None and '1.50x the measured matmul peak' in row['train_warning']
    bench.set_peak_fractions([row], 200.)  # re-scored with the higher peak re-measured at the end
    assert row['train_peak_fraction'] == 0.75 and row['train_warning'] == ''


def test_gemm_peak_is_the_best_of_several_sizes(monkeypatch):
    sizes = []

    def fake_time_steps(step, num_warm, num_iter, device):
        n = len(sizes) and sizes[-1]
        return [1.0 if n == 64 else 1e3] * num_iter  # the middle size is the fast one here

    real_randn = torch.randn
    monkeypatch.setattr(torch, 'randn', lambda n, *a, **k: (sizes.append(n), real_randn(1, 1))[1])
    monkeypatch.setattr(bench.timing, 'time_steps', fake_time_steps)
    assert bench.gemm_peak(torch.device('cpu'), 'float32', size=128) == pytest.approx(2 * 64 ** 3 / 1e-3 / 1e9)
    assert sorted(set(sizes)) == [32, 64, 128]


def test_warm_up_continues_until_steps_are_steady():
    import time
    calls = []

    def step():  # a compiled model: the first calls are slow, then each faster until steady
        calls.append(1)
        time.sleep((0.2, 0.08, 0.03)[len(calls) - 1] if len(calls) <= 3 else 0.01)

    assert bench.warm_up(step, 2, torch.device('cpu')) == (2, True)
    calls.clear()
    runs, steady = bench.warm_up(step, 2, torch.device('cpu'), until_steady=True, tolerance=0.5)
    assert steady and runs >= 5
    calls.clear()
    assert bench.warm_up(lambda: time.sleep(0.01 * (len(calls) + 1)) or calls.append(1), 1,
                         torch.device('cpu'), until_steady=True, max_extra=3, tolerance=0.01) == (4, False)


def test_help_gives_every_flag_its_meaning_and_default_once():
    parser = bench.build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        assert action.help, f'{action.option_strings} has no help'
        text = formatter._expand_help(action)
        assert text.lower().count('default') <= 1, text
        assert '(default: None)' not in text, text  # a default of None is said in words
        if action.nargs != 0:  # an on/off flag is off unless given; every other flag says what it is without
            assert '(default: ' in text, text
    # the batch of the benchmark tables (docs/benchmarks.md: one clip a step)
    assert parser.get_default('batch_size') == 1 and 'clips per step (default: 1)' in parser.format_help()


def test_sweep_gives_one_row_per_point(tmp_path):
    lines = []
    rows = bench.run([*TINY, '--sweep', 'num_frames=2,4,6'], log=lines.append)
    table = bench.sweep_table(rows)
    assert [e['point'] for e in table] == [2, 4, 6]
    assert {r['model'] for r in rows} == {LABEL, LABEL[:-1] + ',block_types=joint]'}
    for entry in table:
        assert entry['infer_ms'] > 0 and entry['joint_infer_ms'] > 0
        assert entry['gmacs_ratio'] == pytest.approx(entry['joint_gmacs'] / entry['gmacs'])
    last = table[-1]
    logo = bench.count_model(ModelSpec('logoformer_tiny', SMALL_KWARGS), 6, 32).infer.gmacs
    joint = bench.count_model(ModelSpec('logoformer_tiny', dict(SMALL_KWARGS, block_types='joint')), 6, 32)
    assert last['gmacs'] == pytest.approx(logo, abs=1e-3)
    assert last['joint_gmacs'] == pytest.approx(joint.infer.gmacs, abs=1e-3)
    assert [r['infer_frames'] for r in rows] == [2, 2, 4, 4, 6, 6]
    assert 'num_frames=6' in '\n'.join(lines)


def test_bad_sweep_and_plot_without_sweep_are_user_errors():
    with pytest.raises(BenchmarkError, match='--sweep'):
        bench.parse_sweep('depth=1,2')
    with pytest.raises(BenchmarkError, match='integers'):
        bench.parse_sweep('num_frames=8,x')
    assert bench.main([*TINY, '--plot', 'x.png']) == 2


def test_plot_is_written(tmp_path):
    pytest.importorskip('matplotlib')
    table = [dict(sweep='num_frames', point=p, model='m', joint_model='m[block_types=joint]', gmacs=p,
                  joint_gmacs=p * p, gmacs_ratio=p, infer_ms=1. * p, joint_infer_ms=2. * p, infer_time_ratio=2.,
                  infer_mem_mb=10., joint_infer_mem_mb=20.) for p in (8, 16)]
    path = tmp_path / 'sweep.png'
    bench.plot_sweep(table, str(path))
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_oom_retries_with_smaller_batch(monkeypatch):
    seen = []

    def fake_measure(spec, mode, cfg, isolated=False):
        seen.append(cfg.batch_size)
        if cfg.batch_size > 2:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return dict(step_time=1., batch_size=cfg.batch_size)

    monkeypatch.setattr(bench.runner, 'measure', fake_measure)
    log = []
    cfg = bench.BenchConfig(batch_size=8, isolate=False)
    result = bench.measure_with_retry(ModelSpec('logoformer_tiny'), 'inference', cfg, log.append)
    assert seen == [8, 4, 2] and result['batch_size'] == 2
    assert 'out of memory at batch 8, retried with 4' in result['batch_note']
    assert len(log) == 2  # said in the output


def test_other_errors_are_not_retried(monkeypatch):
    def broken(spec, mode, cfg, isolated=False):
        raise RuntimeError('shape mismatch')

    monkeypatch.setattr(bench.runner, 'measure', broken)
    with pytest.raises(RuntimeError, match='shape mismatch'):
        bench.measure_with_retry(ModelSpec('logoformer_tiny'), 'inference', bench.BenchConfig(isolate=False))


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without a CUDA GPU')
def test_cuda_without_gpu_is_a_clear_error(capsys):
    assert bench.main(['--device', 'cuda', '--model', 'logoformer_tiny']) == 2
    err = capsys.readouterr().err
    assert 'no CUDA GPU is available' in err and '--device cpu' in err and 'Traceback' not in err


def test_script_user_error_exits_nonzero_without_traceback():
    proc = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'flops.py'), '--model', 'no_such_model_xyz'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert 'no model matches' in proc.stderr and 'Traceback' not in proc.stderr


def test_isolated_measurement_in_a_fresh_process():
    """The default on CPU: each model and mode is timed in a fresh process, where its peak RSS is its own."""
    cfg = bench.BenchConfig(num_frames=2, img_size=32, batch_size=2, num_warm_iter=0, num_bench_iter=1)
    result = bench.runner._measure_isolated(ModelSpec('logoformer_tiny', SMALL_KWARGS), 'train', cfg)
    assert result['mem_method'] == 'cpu peak RSS increase (fresh process per model and mode)'
    assert result['peak_mem_mb'] > 0 and result['batch_size'] == 2 and result['step_time'] > 0


def test_missing_peer_package_is_reported_not_fatal(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == 'transformers':
            raise ImportError('No module named transformers')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_transformers)
    specs, missing = bench.peer_specs('video')
    assert [s.name for s in specs] == ['torchvision/r3d_18', 'torchvision/r2plus1d_18', 'torchvision/swin3d_t']
    assert len(missing) == 3 and all('transformers is not installed' in m and '[bench]' in m for m in missing)


TINY_PARTS = ['stem', 'token embedding', 'local attention', 'global attention', 'MLP', 'head']


def test_detail_times_and_memory_per_part():
    """--detail: every part timed within the same passes as the whole, tensor-memory peaks from the profiler."""
    cfg = bench.BenchConfig(num_frames=4, img_size=64, batch_size=1, num_warm_iter=1, num_bench_iter=2,
                            threads=2, isolate=False)
    result = bench.measure_parts(ModelSpec('logoformer_tiny'), cfg)
    assert list(result['ms_by_part']) == TINY_PARTS + ['other']
    assert list(result['peak_mem_mb_by_part']) == TINY_PARTS
    parts_ms = sum(v for k, v in result['ms_by_part'].items() if k != 'other')
    assert 0 < parts_ms <= result['parts_step_ms'] * 1.001
    assert result['ms_by_part']['other'] >= -1e-6
    assert all(v >= 0 for v in result['peak_mem_mb_by_part'].values())
    # the stem holds conv1's output (4 frames x 64 channels x 32 x 32 float32) at some point
    assert result['peak_mem_mb_by_part']['stem'] >= 4 * 64 * 32 * 32 * 4 / 1e6
    assert result['parts_step_peak_mem_mb'] >= max(result['peak_mem_mb_by_part'].values())
    assert 'conv' in result['peak_op_by_part']['stem']
    assert 'torch.profiler' in result['parts_method'] and 'perf_counter' in result['parts_method']
    joint = bench.measure_parts(ModelSpec('logoformer_tiny', dict(block_types='joint')), cfg)
    assert 'joint attention' in joint['ms_by_part'] and 'local attention' not in joint['ms_by_part']


def test_cuda_part_peaks_use_the_allocator_statistics(monkeypatch):
    """The CUDA branch, run against a fake allocator: each part's peak above its start, the pass's overall peak."""
    from logoformer_timm.bench import profiling

    class FakeAllocator:
        allocated = peak = 0

        def alloc(self, n):
            self.allocated += n
            self.peak = max(self.peak, self.allocated)

    mem = FakeAllocator()

    class Part(torch.nn.Module):
        def __init__(self, temp, keep):
            super().__init__()
            self.temp, self.keep = temp, keep

        def forward(self, x):
            mem.alloc(self.temp)
            mem.alloc(-self.temp + self.keep)  # a temporary freed, an output kept
            return x

    model = torch.nn.Sequential(Part(100, 10), Part(95, 5))
    monkeypatch.setattr(torch.cuda, 'memory_allocated', lambda device=None: mem.allocated)
    monkeypatch.setattr(torch.cuda, 'max_memory_allocated', lambda device=None: mem.peak)
    monkeypatch.setattr(torch.cuda, 'reset_peak_memory_stats', lambda device=None: setattr(mem, 'peak', mem.allocated))
    monkeypatch.setattr(profiling, "synchronize", lambda device: None)
    modules = profiling.part_modules(model, [('first', '0'), ('second', '1')])
    peaks, step_peak = profiling._cuda_peaks(lambda: model(torch.zeros(1)), modules, torch.device('cuda'))
    assert peaks == dict(first=100, second=95)
    assert step_peak == 10 + 95  # the first part's output is still live during the second part's peak


def test_grid_parsing_and_combinations():
    assert bench.parse_grid('clip=16x112,32x224') == ('clip', [(16, 112), (32, 224)])
    assert bench.parse_grid('batch_size=1,8') == ('batch_size', [1, 8])
    assert bench.parse_grid('torchcompile=none,inductor') == ('torchcompile', [None, 'inductor'])
    for bad in ('clip=16', 'clip=0x112', 'batch_size=1,x', 'precision=fp8', 'depth=1,2', 'batch_size='):
        with pytest.raises(BenchmarkError, match='--grid'):
            bench.parse_grid(bad)
    configs = bench.grid_configs(bench.BenchConfig(), [bench.parse_grid('clip=16x112,64x224'),
                                                       bench.parse_grid('precision=float32,amp_bfloat16')])
    assert [label for label, _ in configs] == [
        'clip=16x112 precision=float32', 'clip=16x112 precision=amp_bfloat16',
        'clip=64x224 precision=float32', 'clip=64x224 precision=amp_bfloat16']
    assert [(c.num_frames, c.img_size, c.precision) for _, c in configs][-1] == (64, 224, 'amp_bfloat16')
    assert bench.main([*TINY, '--grid', 'batch_size=1', '--sweep', 'num_frames=2']) == 2


def test_grid_measures_every_model_at_every_point_side_by_side():
    lines = []
    rows = bench.run([*TINY, '--grid', 'batch_size=1,2', '--grid', 'precision=float32,amp_bfloat16'],
                     log=lines.append)
    assert len(rows) == 4 and 'grid point' in '\n'.join(lines)
    assert {r['grid'] for r in rows} == {f'batch_size={b} precision={p}' for b in (1, 2)
                                         for p in ('float32', 'amp_bfloat16')}
    for row in rows:
        batch, precision = (kv.split('=')[1] for kv in row['grid'].split())
        assert (row['infer_batch_size'], row['precision']) == (int(batch), precision)
        assert row['infer_step_time'] > 0 and row['infer_peak_mem_mb'] is not None


def test_kernel_ab_times_two_versions_on_the_same_weights(capsys):
    """benchmarks/kernel_ab.py: another copy of the package against this one, outputs compared, one row each."""
    import importlib.util
    from pathlib import Path
    import logoformer_timm
    script = Path(__file__).resolve().parents[1] / 'benchmarks' / 'kernel_ab.py'
    spec = importlib.util.spec_from_file_location('kernel_ab', script)
    kernel_ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel_ab)
    threads = torch.get_num_threads()
    assert kernel_ab.main([
        '--before', str(Path(logoformer_timm.__file__).parent), '--grid', '3x5x6', '--clip', '2x32', '--dim', '16',
        '--heads', '2', '--depth', '1', '--warm', '1', '--iters', '2', '--model-iters', '2', '--mode', 'eager']) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(('| local', '| global', '| Logo'))]
    assert len(rows) == 3 and all(row.endswith('| 0.0e+00 |') for row in rows)
    assert torch.get_num_threads() == threads  # the tests after it keep their thread count (and numerics)
    import timm
    assert type(timm.create_model('logoformer_tiny', num_frames=2, img_size=32)) is logoformer_timm.LogoFormer


def test_timm_precision_flags_name_the_autocast_and_the_model_dtype():
    """timm benchmark.py's --amp / --amp-dtype (autocast, float32 weights) and --model-dtype (weights cast)."""
    from logoformer_timm.bench.timing import precision_dtypes
    cpu = torch.device('cpu')
    assert precision_dtypes('amp_bfloat16', cpu) == (torch.float32, torch.bfloat16)
    assert precision_dtypes('bfloat16', cpu) == (torch.bfloat16, None)
    parse = bench.build_parser().parse_args
    assert bench.resolve_precision(parse(['--amp-dtype', 'bfloat16'])) == 'amp_bfloat16'
    assert bench.resolve_precision(parse(['--amp'])) == 'amp'
    assert bench.resolve_precision(parse(['--model-dtype', 'bfloat16'])) == 'bfloat16'
    assert bench.resolve_precision(parse(['--precision', 'amp_bfloat16'])) == 'amp_bfloat16'
    rows = bench.run([*TINY, '--model-dtype', 'bfloat16'], log=lambda line: None)
    assert [r['precision'] for r in rows] == ['bfloat16'] and rows[0]['infer_step_time'] > 0
    for conflict in (['--amp-dtype', 'bfloat16', '--model-dtype', 'bfloat16'],
                     ['--precision', 'float16', '--model-dtype', 'bfloat16']):
        assert bench.main([*TINY, *conflict]) == 2


def test_bf16_cpu_script_times_the_three_precisions_and_finds_no_broadcast_weights(tmp_path):
    """benchmarks/bf16_cpu.py: float32, bf16 autocast and bf16 weights side by side, profile and CPU named."""
    import importlib.util
    script = REPO / 'benchmarks' / 'bf16_cpu.py'
    spec = importlib.util.spec_from_file_location('bf16_cpu', script)
    bf16_cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bf16_cpu)
    threads = torch.get_num_threads()
    out = tmp_path / 'r.json'
    assert bf16_cpu.main(['--model', 'logoformer_tiny', '--mode', 'eager', '--warm', '0', '--iters', '1',
                          '--gemm-size', '256', '--results-file', str(out), str(tmp_path / 'r.md')]) == 0
    assert torch.get_num_threads() == threads
    result = json.loads(out.read_text())
    assert [r['precision'] for r in result['rows']] == ['float32', 'amp_bfloat16', 'bfloat16']
    assert all(r['broadcast_weight_ops'] == {} for r in result['rows'])
    assert result['rows'][0]['max_abs_logit_diff_vs_float32'] == 0
    assert 0 < result['rows'][1]['max_abs_logit_diff_vs_float32'] < 0.05
    assert 'avx512_bf16' in result['cpu'] and 'amx_bf16' in result['cpu']  # each extension is named, had or not
    assert '| logoformer_tiny | 16x112x112 | 7.17 | bfloat16 | eager |' in (tmp_path / 'r.md').read_text()


def _script(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_under_load_script_runs_the_docs_demo_beside_busy_processes_and_stops_them(tmp_path, monkeypatch):
    """benchmarks/under_load.py: the demo commands of docs/training.md as written, quiet then loaded, fair share
    = quiet x (1 + competing / cores), every busy process stopped; an unfinished run is reported as such."""
    import os
    under_load = _script('under_load')
    generate, train = under_load.demo_commands()
    assert generate[1:4] == ['-m', 'logoformer_timm.dfer.synthetic', '--output']
    assert train[1:3] == ['-m', 'logoformer_timm.dfer.train'] and train[-2:] == ['--seed', '0']
    assert under_load.epoch_times('epoch 1/16  loss 1.5  val UAR 53.33  WAR 53.33  (1.6s)\nepoch 2/16  x  (12.0s)\n') \
        == [1.6, 12.0]
    started, seen = [], []
    real_busy = under_load.busy_processes

    def busy(n, limit):
        started.extend(real_busy(n, limit))
        return started

    def timed(argvs, cwd, limit, env=None):  # quiet 10 s; loaded 25 s, unfinished with the unfixed spinning
        alive = sum(p.poll() is None for p in started)
        seen.append(alive)
        unfinished = bool(env) and alive > 0
        return dict(load_before=[1.0, 1.0, 1.0], load_after=[2.0, 2.0, 2.0], times=[10.0 if not alive else 25.0],
                    finished=not unfinished, seconds=limit if unfinished else 10.0 if not alive else 25.0,
                    epochs=[0.5, 0.7, 0.6])

    monkeypatch.setattr(under_load, 'busy_processes', busy)
    monkeypatch.setattr(under_load, 'timed', timed)
    out = tmp_path / 'under_load'
    assert under_load.main(['--competing', '2', '--limit', '60', '--unfixed', '--output', str(out)]) == 0
    cores = len(os.sched_getaffinity(0))
    assert seen == [0, 0, 2, 2] and all(p.poll() is not None for p in started)
    result = json.loads((tmp_path / 'under_load.json').read_text())
    demo, unfixed = result['rows']
    assert demo['fair_share'] == round(10.0 * (1 + 2 / cores), 1) and demo['ratio'] == round(25.0 / demo['fair_share'], 2)
    assert unfixed['quiet']['finished'] and not unfixed['loaded']['finished'] and unfixed['ratio'] is None
    assert result['cpu'] and result['cores'] == cores
    text = (tmp_path / 'under_load.md').read_text()
    assert 'not finished after 60 s' in text and '3, median 0.6 s' in text
