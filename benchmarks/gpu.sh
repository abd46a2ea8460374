#!/usr/bin/env bash
# The whole GPU check in one command on any CUDA machine, about 5 minutes at most with the default budget, everything
# in one results folder:
#   the CUDA tests (pytest -m cuda tests/test_cuda.py, junit XML), the matmul peak per precision and the copy
#   bandwidth (before and after the models), and the benchmark plan of logoformer_timm/bench/gpu/plan.py (variants,
#   joint baseline, DFER peers found; two clips, batch 1/32/128, fp32 and bf16 autocast, eager and compiled,
#   inference and training) under a time budget, with every entry not measured and why.
#
#   bash benchmarks/gpu.sh [--out DIR] [--budget-s S] [--dry-run]
#
# --out: the results folder (default: benchmarks/results/gpu/<date>; with --dry-run a new temporary folder, printed).
# It gets 7 files: log.txt, env.txt, pytest_cuda.xml, results.json, results.md, results.csv, summary.md.
# --dry-run: on CPU, fake timings and a mocked torch.cuda: checks the plan, the schema and the report (CI does); its
# fake figures never land among the real results unless --out says so.
# Runs from a plain copy of the repository (PYTHONPATH, no pip install); wheels in .whl/ are installed first
# into /tmp/site (a missing or older package on a machine without network). PYTHON picks the interpreter.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}
OUT_DIR=""
BUDGET=150
DRY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT_DIR=${2:?--out needs a folder}; shift 2 ;;
        --budget-s) BUDGET=${2:?--budget-s needs seconds}; shift 2 ;;
        --dry-run) DRY=--dry-run; shift ;;
        -h|--help) sed -n '2,/^set /p' "$0" | grep '^#'; exit 0 ;;
        *) echo "error: unknown argument $1 (see bash benchmarks/gpu.sh --help)" >&2; exit 2 ;;
    esac
done
case "$BUDGET" in ''|*[!0-9]*) echo "error: --budget-s must be a whole number of seconds, got $BUDGET" >&2; exit 2 ;; esac
if [ -z "$OUT_DIR" ] && [ -n "$DRY" ]; then
    OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/logoformer-gpu-dry-run.XXXXXX") || exit 2
    echo "dry run: writing to $OUT_DIR (pass --out to choose)"
elif [ -z "$OUT_DIR" ]; then
    OUT_DIR=benchmarks/results/gpu/$(date -u +%Y-%m-%d_%H%M)
fi
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
COMMAND="bash benchmarks/gpu.sh --out $OUT_DIR --budget-s $BUDGET${DRY:+ $DRY}"
exec > >(tee -a "$OUT_DIR/log.txt") 2>&1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export LOGOFORMER_GPU_COMMAND="$COMMAND"
START=$(date +%s)
echo "== $COMMAND ($(date -u))"

if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

# 1. the machine and the packages
{
    echo "command: $COMMAND"
    echo "date: $(date -u)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo 'unknown (no .git in this copy)')"
    echo "host: $(uname -a)"
    echo
    "$PYTHON" - <<'EOF'
import sys
import torch
print('python', sys.version.split()[0], sys.executable)
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        print(f'cuda:{i}', torch.cuda.get_device_properties(i))
else:
    print('torch.cuda.is_available() is False')
EOF
    echo
    "$PYTHON" -m pip freeze 2>/dev/null | grep -i -E '^(torch|timm|einops|safetensors|huggingface|triton|numpy|onnx|pytest|nvidia-(cudnn|cublas|nccl))' \
        || echo "pip freeze unavailable"
    echo
    if command -v nvidia-smi >/dev/null; then nvidia-smi -q; else echo "nvidia-smi: not on this machine"; fi
} > "$OUT_DIR/env.txt" 2>&1
"$PYTHON" - <<'EOF' || echo "warning: version check failed to run"
import importlib.metadata as md
from packaging.version import Version
need = {'torch': '2.4', 'timm': '1.0.31', 'einops': '0.7', 'safetensors': '0.4', 'huggingface-hub': '0.23'}
for name, least in need.items():
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        print(f'warning: {name} is not installed (needs >= {least}): put its wheel in .whl/')
        continue
    ok = Version(have.split('+')[0]) >= Version(least)
    print(f'{name} {have}' + ('' if ok else f': older than {least}, put a newer wheel in .whl/ (benchmarks/results/gpu/README.md)'))
EOF

# 2. the CUDA tests (on CPU they all skip, each with its reason); pytest-timeout, where installed, stops a hung test
echo "== CUDA tests"
TIMEOUT_ARG=""
"$PYTHON" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_ARG="--timeout 60"
timeout 100 "$PYTHON" -m pytest $TIMEOUT_ARG -q -p no:cacheprovider -m cuda tests/test_cuda.py -rs \
    --junitxml "$OUT_DIR/pytest_cuda.xml"
TESTS_RC=$?
echo "CUDA tests exit code $TESTS_RC ($(( $(date +%s) - START )) s so far)"

# 3. ceilings and the benchmark plan; a run cut short still gets its report
echo "== benchmark plan (budget $BUDGET s)"
timeout $((BUDGET + 35)) "$PYTHON" -m logoformer_timm.bench.gpu run --out "$OUT_DIR" --budget-s "$BUDGET" $DRY
BENCH_RC=$?
if [ "$BENCH_RC" -ne 0 ] && [ -f "$OUT_DIR/results.json" ]; then
    echo "benchmark exit code $BENCH_RC: rewriting the report from what was measured"
    "$PYTHON" -m logoformer_timm.bench.gpu report --out "$OUT_DIR"
fi

echo "== done in $(( $(date +%s) - START )) s: $OUT_DIR"
ls -l "$OUT_DIR"
[ -f "$OUT_DIR/summary.md" ] && sed -n '/^## Ceilings/,/^## Measured/p' "$OUT_DIR/summary.md" | grep -v '^- skipped: '
echo "tests exit code $TESTS_RC, benchmark exit code $BENCH_RC"
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
