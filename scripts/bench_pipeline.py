"""Throughput of the training tuple pipeline: JPEG decode + resize (+ augmentation), images/s.

Moved into the package: run `sare-tf bench pipeline` (same flags, `--help` lists them). This
script is kept so that `python scripts/bench_pipeline.py [flags]` keeps working.
"""

from __future__ import annotations

import sys

from sare_tf.bench.common import main as run_benchmark


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(["pipeline", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
