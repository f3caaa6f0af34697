"""Retrieval benchmarks: exact evaluation at Pitts250k-test size, and exact vs compressed indexes.

Moved into the package: run `sare-tf bench retrieval` (same flags, `--help` lists them). This
script is kept so that `python scripts/bench_retrieval.py [flags]` keeps working.
"""

from __future__ import annotations

import sys

from sare_tf.bench.retrieval import main, parse_args  # noqa: F401  (parse_args: tests)

if __name__ == "__main__":
    sys.exit(main())
