"""The GPU path on CPU: CUDA timing behind fake events, the allocator meter behind a mocked ``torch.cuda``, the
chunking decision per device, the SDPA backend names, and ``benchmarks/gpu.sh``'s plan, schema and report on fake
timings (``--dry-run``), so that a GPU run can fail only for GPU reasons. tests/test_cuda.py runs the real thing."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from logoformer_timm.bench import BenchConfig, environment, gpu, timing
from logoformer_timm.bench.gpu import plan as gpu_plan, run as gpu_run
from logoformer_timm.bench.memory import MemoryMeter
from logoformer_timm.bench.profiling import sdpa_backend_of
from logoformer_timm.layers import FrameStem, attention

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device('cuda')


class _FakeEvent:
    """torch.Event on a fake device clock: each record() reads the clock, each step advances it."""
    clock = [0.]

    def __init__(self, device=None, enable_timing=False):
        assert enable_timing and device.type == 'cuda'
        self.t = None

    def record(self):
        self.t = self.clock[0]

    def elapsed_time(self, end):
        assert self.t is not None and end.t is not None, 'read before it was recorded'
        return end.t - self.t


def test_cuda_timing_uses_events_read_after_one_synchronize(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch, 'Event', _FakeEvent)
    monkeypatch.setattr(torch.accelerator, 'synchronize', lambda device=None: syncs.append(device))
    durations = iter([3., 5., 4., 7., 6.])

    def step():  # the device clock advances by the step's (fake) device time
        _FakeEvent.clock[0] += next(durations, 1.)

    times = timing.time_steps(step, 2, 3, CUDA)
    assert times == [4., 7., 6.]  # the warm-up steps (3, 5) are not timed
    assert syncs == [CUDA, CUDA]  # after the warm-up, and once before the events are read
    assert timing.warm_up(step, 2, CUDA) == (2, True) and len(syncs) == 4


class _WallEvent(_FakeEvent):
    def record(self):
        self.t = time.perf_counter() * 1e3


def test_cuda_part_times_use_events(monkeypatch):
    from logoformer_timm.bench import ModelSpec, build_model
    from logoformer_timm.bench.profiling import profile_parts
    syncs = []
    monkeypatch.setattr(torch, 'Event', _WallEvent)
    monkeypatch.setattr(torch.accelerator, 'synchronize', lambda device=None: syncs.append(device))
    for name in ('memory_allocated', 'max_memory_allocated'):
        monkeypatch.setattr(torch.cuda, name, lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, 'reset_peak_memory_stats', lambda device=None: None)
    model = build_model(ModelSpec('logoformer_tiny', dict(embed_dim=64, num_heads=2, depth=1)), 2, 32).eval()
    x = torch.rand(1, 3, 2, 32, 32)
    with torch.inference_mode():
        result = profile_parts(model, lambda: model(x), device='cuda', num_warm=0, num_iter=2)
    assert 'device events' in result.time_method and result.mem_method.startswith('cuda allocator')
    assert result.step_ms > 0 and 0 < sum(p.time_ms for p in result.parts) <= result.step_ms
    assert syncs and all(d == CUDA for d in syncs)


def test_cuda_memory_meter_reads_the_allocator(monkeypatch):
    mem = SimpleNamespace(allocated=100 * 10 ** 6, peak=0)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: None)
    monkeypatch.setattr(torch.cuda, 'memory_allocated', lambda device=None: mem.allocated)
    monkeypatch.setattr(torch.cuda, 'max_memory_allocated', lambda device=None: mem.peak)
    monkeypatch.setattr(torch.cuda, 'reset_peak_memory_stats', lambda device=None: setattr(mem, 'peak', mem.allocated))
    meter = MemoryMeter(CUDA, isolated=False)
    meter.start()
    mem.peak = 350 * 10 ** 6
    assert meter.peak_mb() == 250. and meter.method == 'cuda max_memory_allocated increase'


def test_precisions_and_environment_on_cuda(monkeypatch):
    assert timing.precision_dtypes('amp', CUDA) == (torch.float32, torch.float16)
    assert timing.precision_dtypes('amp', torch.device('cpu')) == (torch.float32, torch.bfloat16)
    assert timing.precision_dtypes('amp_bfloat16', CUDA) == (torch.float32, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'NVIDIA H200')
    env = environment(BenchConfig(device='cuda', precision='amp_bfloat16'))
    assert env['device_name'] == 'NVIDIA H200' and env['device'] == 'cuda'
    settings = timing.matmul_settings()
    assert set(settings) >= {'float32_matmul_precision', 'cuda_matmul_allow_tf32', 'cudnn_allow_tf32'}


def test_inference_is_chunked_on_cpu_only(monkeypatch):
    assert attention.chunks_on(torch.device('cpu'))
    assert not attention.chunks_on(CUDA) and not attention.chunks_on(torch.device('meta'))
    grid = dict(size=(2, 32, 14, 14, 8))
    assert attention.inference_chunk_frames(torch.empty(**grid), 2) == 2  # 1024 tokens: 2 frames of 2x14x14
    assert attention.inference_chunk_frames(torch.empty(**grid, device='meta'), 2) == 32  # one piece off the CPU
    calls = []
    forward = FrameStem.forward
    monkeypatch.setattr(FrameStem, 'forward', lambda self, x: calls.append(x.shape[0]) or forward(self, x))
    for device, expected in (('cpu', [4, 4, 4, 4]), ('meta', [16])):  # 2 clips of 8 frames at 224: 4 frames a chunk
        calls.clear()
        stem = FrameStem(device=device).eval()
        with torch.no_grad():
            out = stem.forward_clip(torch.rand(2, 8, 3, 224, 224, device=device))
        assert calls == expected and out.shape == (2, 8, 256, 14, 14)


def test_sdpa_kernel_names_map_to_backends():
    assert sdpa_backend_of('void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>') == 'flash'
    assert sdpa_backend_of('fmha_cutlassF_bf16_aligned_64x128_rf_sm80(PyTorchMemEffAttention::AttentionKernel)') == \
        'efficient'
    assert sdpa_backend_of('cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3') == 'cudnn'
    assert sdpa_backend_of('ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn') is None
    assert sdpa_backend_of('void at::native::softmax_warp_forward<float>') is None


def test_copy_bandwidth_counts_read_and_write():
    assert timing.copy_bandwidth(torch.device('cpu'), 2 ** 20, iters=2) > 0


def _fake_count(spec, frames, size):
    gmacs = 10. * frames * size ** 2 / (16 * 112 ** 2)
    return SimpleNamespace(param_count=20., infer=SimpleNamespace(gmacs=gmacs), train_gmacs=3 * gmacs)


def test_plan_covers_the_matrix_and_fits_its_budget(monkeypatch):
    monkeypatch.setattr(gpu_plan, 'peer_models', lambda: ([], ['former_dfer*: no such timm model']))
    entries, notes = gpu.build_plan(count_fn=_fake_count, budget_s=100)
    assert len(entries) == 4 * 2 * 3 * 2 * 2 * 2  # models x clips x batches x precisions x compiled x modes
    assert len({e.label for e in entries}) == len(entries)
    planned = [e for e in entries if e.status == 'planned']
    assert planned and sum(e.est_s for e in planned) <= 100
    assert all(e.reason for e in entries if e.status != 'planned')
    assert all(e.precision == 'amp_bfloat16' for e in planned if e.compile)
    assert planned[0].mode == 'inference' and not planned[0].compile and planned[0].batch_size == 1
    assert notes == ['former_dfer*: no such timm model']
    text = gpu.format_plan(entries, notes)
    assert f'{len(planned)} of {len(entries)} entries planned' in text and 'former_dfer*' in text


def test_peers_run_at_their_protocol_clip_eager_only(monkeypatch):
    monkeypatch.setattr(gpu_plan, 'peer_models', lambda: ([('logoformer_tiny', (16, 160))], []))
    entries, _ = gpu.build_plan(['logoformer_tiny'], count_fn=_fake_count)
    assert {(e.frames, e.img_size) for e in entries} == {(16, 160)}
    assert all(e.status == 'skipped' and 'joint baseline only' in e.reason for e in entries if e.compile)
    monkeypatch.undo()
    found, missing = gpu.peer_models()  # before or after the peers are merged: found, or said to be absent
    assert len(found) + len(missing) >= len(gpu.PEER_PATTERNS)


def test_dry_run_report_never_prints_an_impossible_fraction(tmp_path):
    results = gpu.run_plan(str(tmp_path), dry_run=True, budget_s=25,
                           models=['logoformer_tiny', 'logoformer_base[block_types=joint]'], log=lambda _: None)
    assert results['dry_run'] and results['environment']['device_name'].startswith('NVIDIA H200 (dry run')
    by_status = {}
    for e in results['entries']:
        by_status.setdefault(e['status'], []).append(e)
    assert set(by_status) == {'measured', 'skipped'}
    reasons = ' '.join(e['reason'] for e in by_status['skipped'])
    assert 'time budget' in reasons and 'predicted peak' in reasons and 'compiled' in reasons
    above = [r for r in results['rows'] if r['entry'] == gpu.DRY_RUN_ABOVE_PEAK]
    assert above and above[0]['infer_peak_fraction'] is None and 'measurement problem' in above[0]['infer_warning']
    assert all(r[f'{"infer" if r["mode"] == "inference" else "train"}_peak_fraction'] is not None
               for r in results['rows'] if r['entry'] != gpu.DRY_RUN_ABOVE_PEAK)
    summary = (tmp_path / 'summary.md').read_text()
    assert 'DRY RUN' in summary and '## Not measured' in summary and 'Problems found' not in summary
    assert gpu.check_results(json.loads((tmp_path / 'results.json').read_text()),
                             [summary, (tmp_path / 'results.md').read_text()]) == []
    assert sorted(os.listdir(tmp_path)) == ['results.csv', 'results.json', 'results.md', 'summary.md']


def test_check_results_finds_impossible_figures_and_unexplained_entries():
    row = dict(entry='e', mode='inference', model='m', infer_peak_fraction=1.2)
    entry = gpu.Entry('m', 16, 112, 1, 'float32', False, 'inference', status='skipped')
    problems = gpu.check_results(dict(rows=[row], entries=[vars(entry)]), ['| 12.0 % |', 'at 125 % of its peak'])
    assert any('missing columns' in p for p in problems)
    assert any('outside [0, 1]' in p for p in problems)
    assert any('without a reason' in p for p in problems)
    assert sum('above 100' in p for p in problems) == 1


def test_report_of_a_run_cut_short_and_the_tests_junit(tmp_path):
    gpu.run_plan(str(tmp_path), dry_run=True, budget_s=3, models=['logoformer_tiny'], log=lambda _: None)
    results = json.loads((tmp_path / 'results.json').read_text())
    results['entries'][-1].update(status='planned', reason='')  # as if killed before it
    (tmp_path / 'results.json').write_text(json.dumps(results))
    (tmp_path / 'pytest_cuda.xml').write_text(
        '<testsuites><testsuite><testcase classname="tests.test_cuda" name="test_a"/>'
        '<testcase classname="tests.test_cuda" name="test_b"><failure message="boom"/></testcase>'
        '<testcase classname="tests.test_cuda" name="test_c"><skipped message="no NCCL"/></testcase>'
        '</testsuite></testsuites>')
    lines = []
    assert gpu.write_report(str(tmp_path), log=lines.append) == []
    summary = (tmp_path / 'summary.md').read_text()
    assert 'not reached: the run ended before it' in summary
    assert '1 passed, 1 failed, 1 skipped of 3' in summary and 'test_b: boom' in summary


def test_gpu_command_errors_are_one_line(tmp_path, capsys):
    if not torch.cuda.is_available():
        assert gpu.main(['run', '--out', str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and 'needs a CUDA GPU' in err and '--dry-run' in err
    assert gpu.main(['report', '--out', str(tmp_path / 'none')]) == 2
    assert 'no results.json' in capsys.readouterr().err
    proc = subprocess.run(['bash', str(REPO / 'benchmarks' / 'gpu.sh'), '--frobnicate'], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith('error: unknown argument --frobnicate')


def test_gpu_sh_dry_run_checks_plan_schema_and_report(tmp_path):
    """``bash benchmarks/gpu.sh --dry-run`` as CI runs it: the CUDA tests skip with their reason, the plan runs on
    fake timings, and without --out the fake figures go to a new temporary folder (printed), never among the
    committed results in benchmarks/results/gpu/."""
    results = REPO / 'benchmarks' / 'results' / 'gpu'
    before = sorted(os.listdir(results))
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    proc = subprocess.run(['bash', str(REPO / 'benchmarks' / 'gpu.sh'), '--dry-run'],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(os.listdir(results)) == before
    (out,) = tmp_path.iterdir()
    assert out.name.startswith('logoformer-gpu-dry-run.') and f'dry run: writing to {out}' in proc.stdout
    files = sorted(os.listdir(out))
    assert files == ['env.txt', 'log.txt', 'pytest_cuda.xml', 'results.csv', 'results.json', 'results.md',
                     'summary.md']
    summary = (out / 'summary.md').read_text()
    assert 'DRY RUN' in summary and f'Command: `bash benchmarks/gpu.sh --out {out}' in summary
    if not torch.cuda.is_available():
        assert '0 passed, 0 failed' in summary and 'needs a CUDA GPU' in summary
    assert 'tests exit code 0, benchmark exit code 0' in proc.stdout


def test_an_out_of_memory_entry_fails_alone_and_skips_its_larger_batches(tmp_path, monkeypatch):
    make_fake = gpu_run._fake_measure

    def fake_with_oom(entry_of):
        fake = make_fake(entry_of)

        def measure(spec, mode, cfg, log=print):
            if cfg.batch_size == 32 and cfg.precision == 'amp_bfloat16' and cfg.num_frames == 16 and \
                    mode == 'inference' and not cfg.torchcompile:
                raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
            return fake(spec, mode, cfg, log)
        return measure

    monkeypatch.setattr(gpu_run, '_fake_measure', fake_with_oom)
    results = gpu.run_plan(str(tmp_path), dry_run=True, budget_s=10, models=['logoformer_tiny'], log=lambda _: None)
    status = {e['batch_size']: (e['status'], e['reason']) for e in results['entries']
              if (e['frames'], e['precision'], e['mode'], e['compile']) == (16, 'amp_bfloat16', 'inference', False)}
    assert status[1][0] == 'measured'
    assert status[32][0] == 'failed' and status[32][1].startswith('out of memory: OutOfMemoryError')
    assert status[128] == ('skipped', 'batch 32 of the same setting ran out of memory')
    assert any(e['status'] == 'measured' and e['frames'] == 32 for e in results['entries'])  # the run went on


def test_cuda_device_selection_behind_a_mocked_torch_cuda(monkeypatch):
    from logoformer_timm.device import resolve_device
    from logoformer_timm.errors import UsageError
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert resolve_device('cuda') == CUDA and resolve_device('cuda:0') == torch.device('cuda', 0)
    with pytest.raises(UsageError, match=r'has 1 CUDA GPU\(s\) \(cuda:0 to cuda:0\)'):
        resolve_device('cuda:1')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(UsageError, match='no CUDA GPU is available'):
        resolve_device('cuda')


def test_a_model_that_cannot_take_a_clip_is_skipped_with_the_reason(tmp_path, monkeypatch):
    real = gpu_run.benchmark

    def benchmark(specs, cfg, modes, **kwargs):  # as the harness reports a peer that cannot take a clip
        if cfg.img_size == 224:
            return [dict(model=specs[0].label, skipped='regions need a multiple of 160')]
        return real(specs, cfg, modes, **kwargs)

    monkeypatch.setattr(gpu_run, 'benchmark', benchmark)
    results = gpu.run_plan(str(tmp_path), dry_run=True, budget_s=30, models=['logoformer_tiny'], log=lambda _: None)
    at_224 = [e for e in results['entries'] if e['img_size'] == 224 and e['reason'].startswith('the model cannot')]
    assert at_224 and all(e['status'] == 'skipped' for e in at_224)
    assert results['rows'] and all(r['clip'] == '16x112x112' for r in results['rows'])
    assert gpu.check_results(results) == []
