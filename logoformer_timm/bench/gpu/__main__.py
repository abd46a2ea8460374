"""``python -m logoformer_timm.bench.gpu``."""
import sys

from .cli import main

sys.exit(main())
