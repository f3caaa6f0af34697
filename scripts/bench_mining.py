"""Benchmark of `sare_tf.mining.mine_tuples` on synthetic descriptors of Pitts30k size.

Moved into the package: run `sare-tf bench mining` (same flags, `--help` lists them). This
script is kept so that `python scripts/bench_mining.py [flags]` keeps working.
"""

from __future__ import annotations

import sys

from sare_tf.bench.mining import main

if __name__ == "__main__":
    sys.exit(main())
