"""Retrieval benchmarks: exact evaluation at Pitts250k-test size, and exact vs compressed indexes.

Moved into the package: run `sare-tf bench retrieval` (same flags, `--help` lists them). This
script is kept so that `python scripts/bench_retrieval.py [flags]` keeps working.
"""

from __future__ import annotations

import sys

from sare_tf.bench.common import main as run_benchmark


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(["retrieval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
