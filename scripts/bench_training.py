"""Training-step throughput (tuples/s) of VGG16 + NetVLAD + SARE, float32 vs mixed_bfloat16.

Moved into the package: run `sare-tf bench training` (same flags, `--help` lists them). This
script is kept so that `python scripts/bench_training.py [flags]` keeps working.
"""

from __future__ import annotations

import sys

from sare_tf.bench.common import main as run_benchmark


def main(argv: list[str] | None = None) -> int:
    return run_benchmark(["training", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
