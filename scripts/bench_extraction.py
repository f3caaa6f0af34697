"""Descriptor extraction throughput: VGG16 + NetVLAD vs the bare cropped backbone.

Moved into the package: run `sare-tf bench extraction` (same flags, `--help` lists them). This
script is kept so that `python scripts/bench_extraction.py [flags]` keeps working.
"""

from __future__ import annotations

import sys

from sare_tf.bench.common import main as run_benchmark


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(["extraction", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
