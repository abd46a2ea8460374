"""``python -m logoformer_timm.bench``: the same command as ``logoformer-bench``."""
import sys

from .cli import main

sys.exit(main(prog='python -m logoformer_timm.bench'))
