"""FLOPs / throughput / memory benchmark of LOGO-Former and its peers: ``python benchmarks/flops.py --help``.

A thin wrapper: the command is ``logoformer-bench`` once installed; the logic lives in :mod:`logoformer_timm.benchmark`.
"""
import sys

from logoformer_timm.benchmark import main

if __name__ == '__main__':
    sys.exit(main(prog='python benchmarks/flops.py'))
