"""Benchmark of `sare_tf.mining.mine_tuples` on synthetic descriptors of Pitts30k size.

Moved into the package: run `sare-tf bench mining` (same flags, `--help` lists them). This
script is kept so that `python scripts/bench_mining.py [flags]` keeps working.
"""

from __future__ import annotations

import sys

from sare_tf.bench.common import main as run_benchmark


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(["mining", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
