#!/usr/bin/env python3
"""`logoformer-hub export` (checkpoint -> Hub repo folder) from a clone.

The command line is logoformer_timm/weights/hub.py; the work is done in logoformer_timm/weights/publish.py.
"""
import sys

from logoformer_timm.weights.hub import main as hub_main


def main(argv=None) -> int:
    """Run ``logoformer-hub export`` with ``argv`` (default: the command line)."""
    return hub_main(['export', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
