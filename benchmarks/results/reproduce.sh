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
