"""Descriptor extraction throughput: VGG16 + NetVLAD vs the bare cropped backbone.

Moved into the package: run `sare-tf bench extraction` (same flags, `--help` lists them). This
script is kept so that `python scripts/bench_extraction.py [flags]` keeps working.
"""

from __future__ import annotations

import sys

from sare_tf.bench.extraction import main

if __name__ == "__main__":
    sys.exit(main())
