"""Every place the code branches on CUDA, run on a CUDA GPU (``pytest -m cuda``; ``benchmarks/gpu.sh`` runs them):
timing with CUDA events, the allocator's peak statistics, the SDPA backend chosen, autocast fp16/bf16 on the models,
the harness's ``--precision`` and ``--torchcompile``, chunked inference off on CUDA, ONNX export of a CUDA model,
DDP with NCCL on one rank, training with fp16 grad scaling, the matmul peak and copy bandwidth. Without a GPU every test skips and says why; their
CPU halves (fake events, mocked ``torch.cuda``) are in tests/test_benchmark_gpu.py."""
import json
import os
import time

import pytest
import timm
import torch

from logoformer_timm import bench
from logoformer_timm.bench.memory import MemoryMeter
from logoformer_timm.bench.profiling import sdpa_backends
from logoformer_timm.bench.timing import copy_bandwidth, gemm_peak, time_steps

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason=f'needs a CUDA GPU (torch {torch.__version__}: torch.cuda.is_available() '
                                           f'is False); benchmarks/gpu.sh runs these on one')]

CUDA = torch.device('cuda')
TINY = dict(embed_dim=64, num_heads=2, depth=1)
BENCH_TINY = ['--model', 'logoformer_tiny', '--model-kwargs', 'embed_dim=64', 'num_heads=2', 'depth=1',
              '--num-frames', '4', '--img-size', '64', '-b', '2', '--num-warm-iter', '1', '--num-bench-iter', '3',
              '--gemm-size', '1024', '--device', 'cuda']


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_cuda_events_time_device_work():
    a = torch.randn(4096, 4096, device=CUDA)
    start = time.perf_counter()
    times = time_steps(lambda: a @ a, 1, 5, CUDA)
    wall_ms = (time.perf_counter() - start) * 1e3
    assert len(times) == 5 and all(t > 0 for t in times)
    assert sum(times) <= wall_ms  # device time of the steps, inside the host time around them
    assert bench.percentile(times, 50) > 0.05  # 137 GFLOP: not a launch-only timing


def test_allocator_peak_is_what_the_step_allocated():
    meter = MemoryMeter(CUDA, isolated=False)
    meter.start()
    x = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=CUDA)  # 268 MB
    del x
    assert meter.method == 'cuda max_memory_allocated increase'
    assert 268 <= meter.peak_mb() < 300


def test_bench_detail_reads_the_allocator_per_part():
    rows = bench.run([*BENCH_TINY, '--detail'], log=lambda _: None)
    assert rows[0]['mem_method'] == 'cuda max_memory_allocated increase'
    assert rows[0]['infer_peak_mem_mb_by_part'] and 'cuda' in rows[0]['parts_method'].lower()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_sdpa_runs_a_fused_backend_in_half_precision(dtype):
    model = timm.create_model('logoformer_tiny', num_frames=8, img_size=112, device=CUDA).eval()
    x = torch.rand(2, 3, 8, 112, 112, device=CUDA)
    with torch.inference_mode(), torch.autocast('cuda', dtype=dtype):
        model(x)
        backends = sdpa_backends(lambda: model(x), CUDA)
    assert backends and 'math' not in backends, backends  # flash / efficient / cudnn, never the unfused fallback


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_autocast_on_the_models_is_close_to_float32(precision):
    from logoformer_timm.weights.inference import prepare_for_inference
    model = timm.create_model('logoformer_small', device=CUDA).eval()
    x = torch.rand(2, 3, 16, 112, 112, device=CUDA)
    with torch.inference_mode():
        ref = model(x)
        got = prepare_for_inference(model, precision)(x)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert _rel(got, ref) < 5e-2


@pytest.mark.parametrize('precision', ['float32', 'amp_bfloat16', 'amp'])
def test_bench_precision_on_cuda(precision):
    rows = bench.run([*BENCH_TINY, '--precision', precision, '--bench', 'both'], log=lambda _: None)
    row = rows[0]
    assert row['device_name'] == torch.cuda.get_device_name() and row['precision'] == precision
    for p in ('infer', 'train'):
        assert row[f'{p}_samples_per_sec'] > 0 and row[f'{p}_peak_mem_mb'] > 0
        assert row[f'{p}_peak_fraction'] is None or 0 < row[f'{p}_peak_fraction'] <= 1


def test_bench_torchcompile_on_cuda():
    rows = bench.run([*BENCH_TINY, '--torchcompile', '--bench', 'both'], log=lambda _: None)
    assert rows[0]['torchcompile'] == 'inductor' and rows[0]['infer_warm_steps'] >= 1
    assert rows[0]['infer_samples_per_sec'] > 0 and rows[0]['train_samples_per_sec'] > 0


def test_compiled_model_matches_eager_on_cuda():
    from logoformer_timm.weights.inference import prepare_for_inference
    model = timm.create_model('logoformer_tiny', num_frames=8, device=CUDA, **TINY).eval()
    x = torch.rand(2, 3, 8, 112, 112, device=CUDA)
    with torch.inference_mode():
        ref = model(x)
        got = prepare_for_inference(model, 'fp32', compile=True)(x)
    assert _rel(got, ref) < 1e-3


def test_inference_is_not_chunked_on_cuda():
    from logoformer_timm.layers import attention
    model = timm.create_model('logoformer_base', num_frames=32, img_size=224, device=CUDA).eval()
    x = torch.rand(2, 3, 32, 224, 224, device=CUDA)
    assert not attention.chunks_on(x.device)
    assert attention.inference_chunk_frames(torch.empty(2, 32, 14, 14, 8, device=CUDA), 2) == 32
    with torch.inference_mode():
        chunked_setting = model(x)
        before, attention.INFERENCE_CHUNK_TOKENS = attention.INFERENCE_CHUNK_TOKENS, None
        try:
            one_piece = model(x)
        finally:
            attention.INFERENCE_CHUNK_TOKENS = before
    torch.testing.assert_close(chunked_setting, one_piece, rtol=0, atol=1e-5)  # the same kernels either way


def test_onnx_export_of_a_cuda_model(tmp_path):
    pytest.importorskip('onnxscript')
    ort = pytest.importorskip('onnxruntime')
    from logoformer_timm.video.export import export_onnx
    model = timm.create_model('logoformer_tiny', device=CUDA).eval()
    path = export_onnx(model, str(tmp_path / 'tiny.onnx'))
    x = torch.rand(3, 3, 16, 112, 112)
    with torch.inference_mode():
        ref = model(x.to(CUDA)).cpu()
    got = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(None, {'clip': x.numpy()})[0]
    assert got.shape == (3, 7) and _rel(torch.from_numpy(got), ref) < 1e-3


def test_ddp_with_nccl_on_one_rank(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from logoformer_timm.dfer.distributed import DistInfo, all_reduce_sum, init_distributed
    if not dist.is_nccl_available():
        pytest.skip('this torch build has no NCCL')
    info = init_distributed('cuda')  # WORLD_SIZE unset: one process, no group, the device chosen
    assert info.device == torch.device('cuda', 0) and not info.enabled
    dist.init_process_group('nccl', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try:
        model = DistributedDataParallel(timm.create_model('logoformer_tiny', num_frames=4, img_size=64, device=CUDA,
                                                          **TINY), device_ids=[0])
        loss = model(torch.rand(2, 3, 4, 64, 64, device=CUDA)).square().mean()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        total = all_reduce_sum(torch.ones(3, device=CUDA), DistInfo(0, 2, 0, CUDA))  # 'enabled' path, one rank
        assert total.tolist() == [1., 1., 1.] and dist.get_backend() == 'nccl'
    finally:
        dist.destroy_process_group()


def test_matmul_peak_and_copy_bandwidth_are_plausible():
    fp32, bf16 = gemm_peak(CUDA, 'float32', 4096), gemm_peak(CUDA, 'amp_bfloat16', 4096)
    assert 1e3 < fp32 < bf16  # GFLOP/s: tensor cores make bf16 faster
    assert 100 < copy_bandwidth(CUDA, 2 ** 28) < 1e5  # GB/s


def test_device_selection():
    from logoformer_timm.device import resolve_device
    from logoformer_timm.errors import UsageError
    assert resolve_device('cuda:0') == torch.device('cuda', 0)
    with pytest.raises(UsageError, match='CUDA GPU'):
        resolve_device(f'cuda:{torch.cuda.device_count()}')


def test_gpu_plan_measures_a_small_entry(tmp_path):
    from logoformer_timm.bench import gpu
    results = gpu.run_plan(str(tmp_path), budget_s=5, models=['logoformer_tiny'], gemm_size=1024,
                           copy_bytes=2 ** 26, log=lambda _: None)
    measured = [r for r in results['rows'] if r['mode'] == 'inference']
    assert measured and measured[0]['mem_method'] == 'cuda max_memory_allocated increase'
    assert not gpu.check_results(results)
    assert os.path.exists(tmp_path / 'summary.md')


def test_training_on_cuda_with_amp_scales_fp16_and_saves_the_cuda_rng(tmp_path):
    from safetensors.torch import load_file
    from logoformer_timm.dfer import train as train_cli
    from logoformer_timm.dfer.synthetic import make_motion_dataset
    root, out = tmp_path / 'data', tmp_path / 'run'
    make_motion_dataset(str(root), (('train', 2), ('test', 1)), ('right', 'left'), frames_range=(5, 8), size=16,
                        seed=1)
    args = ['--model', 'logoformer_tiny', '--img-size', '16', '--num-segments', '2', '--frames-per-segment', '2',
            '--num-classes', '2', '--workers', '0', '--data-root', str(root), '--train-list', str(root / 'train.txt'),
            '--val-list', str(root / 'test.txt'), '--output', str(out), '--batch-size', '2', '--hflip', '0',
            '--epochs', '1', '--device', 'cuda', '--amp']
    assert train_cli.main(args) == 0  # pin_memory, fp16 autocast and GradScaler on CUDA
    state = json.loads((out / 'last' / 'train_state.json').read_text())
    assert state['scaler'] is not None and state['epoch'] == 1
    assert any(k.startswith('rng.cuda.') for k in load_file(str(out / 'last' / 'train_state.safetensors')))
