#!/usr/bin/env bash
# Reproduce every file in benchmarks/results/ (CPU, float32, random weights, one thread: see README.md). Run from the repository root
# with the bench extra installed: pip install -e ".[bench]"
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=benchmarks/results

# 16x112x112: the three variants, logoformer_base with full (joint) attention, and the peers; inference
python benchmarks/flops.py --model 'logoformer_*' 'logoformer_base[block_types=joint]' --peers --detail \
    --bench inference --threads 1 -b 1 --num-warm-iter 1 --num-bench-iter 5 \
    --results-file $OUT/inference_16x112.md $OUT/inference_16x112.json $OUT/inference_16x112.csv

# 16x112x112: training steps (forward + backward + SGD step) of the same models and the torchvision peers
python benchmarks/flops.py --model 'logoformer_*' 'logoformer_base[block_types=joint]' 'torchvision/*' \
    --bench train --threads 1 -b 1 --num-warm-iter 1 --num-bench-iter 5 \
    --results-file $OUT/train_16x112.md $OUT/train_16x112.json $OUT/train_16x112.csv

# scaling: frames to 64 and resolution to 224, logoformer_base against its block_types=joint twin
python benchmarks/flops.py --model logoformer_base --sweep num_frames=8,16,32,64 --sweep img_size=112,160,224 \
    --bench inference --threads 1 -b 1 --num-warm-iter 1 --num-bench-iter 5 --plot $OUT/sweep.png \
    --results-file $OUT/sweep.md $OUT/sweep.json $OUT/sweep.csv

# LOGO-Former against joint attention at 16x112, 32x224 and 64x224, inference and training, batch 1
python benchmarks/flops.py --model logoformer_base 'logoformer_base[block_types=joint]' --grid clip=16x112,32x224,64x224 \
    --bench both --threads 1 -b 1 --num-warm-iter 1 --num-bench-iter 3 \
    --results-file $OUT/logo_vs_joint_b1.md $OUT/logo_vs_joint_b1.json $OUT/logo_vs_joint_b1.csv
# batch 8: inference at 16x112 and 32x224, training at 16x112 (64x224 and 32x224 training at batch 8: not run, time)
python benchmarks/flops.py --model logoformer_base 'logoformer_base[block_types=joint]' --grid clip=16x112,32x224 \
    --bench inference --threads 1 -b 8 --num-warm-iter 1 --num-bench-iter 3 \
    --results-file $OUT/logo_vs_joint_b8_inference.md $OUT/logo_vs_joint_b8_inference.json $OUT/logo_vs_joint_b8_inference.csv
python benchmarks/flops.py --model logoformer_base 'logoformer_base[block_types=joint]' --num-frames 16 --img-size 112 \
    --bench train --threads 1 -b 8 --num-warm-iter 1 --num-bench-iter 3 \
    --results-file $OUT/logo_vs_joint_b8_train_16x112.md $OUT/logo_vs_joint_b8_train_16x112.json $OUT/logo_vs_joint_b8_train_16x112.csv
# per-part GMACs, time and peak memory of logoformer_base at 16x112 and 32x224
python benchmarks/flops.py --model logoformer_base --detail --grid clip=16x112,32x224 \
    --bench inference --threads 1 -b 1 --num-warm-iter 1 --num-bench-iter 3 \
    --results-file $OUT/detail_logoformer_base.md $OUT/detail_logoformer_base.json $OUT/detail_logoformer_base.csv
# eager against compiled (inductor) against bf16 autocast, the three variants at 16x112
python benchmarks/flops.py --model 'logoformer_*' --grid precision=float32,amp_bfloat16 --grid torchcompile=none,inductor \
    --num-frames 16 --img-size 112 --bench inference --threads 1 -b 1 --num-warm-iter 2 --num-bench-iter 5 \
    --results-file $OUT/fast_path_16x112.md $OUT/fast_path_16x112.json $OUT/fast_path_16x112.csv
# activations saved for backward, per part (exact bytes; explains the training memory difference)
python benchmarks/saved_activations.py --model logoformer_base 'logoformer_base[block_types=joint]' --clip 16x112 32x224 \
    > $OUT/saved_activations.md

# einops kernels: the einops attention kernels against the kernels before them (commit 7680fa1), logoformer_base,
# eager and inductor at 16x112 and 32x224; benchmarks/flops.py runs alternately from a copy of the package at each
# version (run from that folder, so its fresh processes import that copy), four rounds, then one summary
BASE_COMMIT=7680fa1
REPO=$PWD
RUNS=$(mktemp -d)
for version in before after; do
    mkdir -p "$RUNS/$version"
    if [ "$version" = before ]; then git archive "$BASE_COMMIT" logoformer_timm | tar -x -C "$RUNS/$version"
    else cp -r logoformer_timm "$RUNS/$version/"; fi
done
for round in 1 2 3 4; do
    for version in before after; do
        (cd "$RUNS/$version" && PYTHONPATH="$RUNS/$version" python "$REPO/benchmarks/flops.py" --model logoformer_base \
            --grid clip=16x112,32x224 --grid torchcompile=none,inductor --bench inference --threads 1 -b 1 \
            --num-warm-iter 2 --num-bench-iter 5 \
            --results-file "$RUNS/einops_kernels_${version}_${round}.md" "$RUNS/einops_kernels_${version}_${round}.json")
    done
done
python benchmarks/einops_kernels_combine.py "$RUNS" $OUT/einops_kernels
# both versions in one process, calls alternating (kernels and whole logoformer_base, eager and inductor)
python benchmarks/kernel_ab.py --before "$RUNS/before/logoformer_timm" > $OUT/einops_kernels_ab.md

# the DFER zoo: LOGO-Former against the DFER zoo, each at its own protocol clip and at the common 16x160
python benchmarks/flops.py --model 'logoformer_*' --peers dfer --img-size 160 --bench both --threads 1 -b 1 \
    --num-warm-iter 1 --num-bench-iter 3 \
    --results-file benchmarks/results/dfer_peers.md benchmarks/results/dfer_peers.json benchmarks/results/dfer_peers.csv

# bf16 on the CPU: float32 / bf16 autocast / bf16 weights, eager and inductor, the variants and the zoo at their own clip,
# batch 1, one process, calls in turn; the float32 model of commit 7821cbe (before the fix) in the same rotation
BEFORE=$(mktemp -d)
git archive 7821cbe logoformer_timm | tar -x -C "$BEFORE"
python benchmarks/bf16_cpu.py --before "$BEFORE/logoformer_timm" \
    --results-file $OUT/bf16_cpu.md $OUT/bf16_cpu.json

# the training demo of docs/training.md quiet, beside 4 busy processes and with GNU OpenMP's default spinning, in one
# run; a few test files quiet and loaded the same way
python benchmarks/under_load.py --competing 4 --limit 240 --unfixed --suite \
    tests/test_train.py::test_checkpoints_summary_and_eval_agree tests/test_train.py::test_folds_write_per_fold_runs_and_a_mean_table \
    tests/test_metrics.py tests/test_loss.py
