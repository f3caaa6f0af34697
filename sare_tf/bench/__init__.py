"""Benchmarks of sare_tf, run as `sare-tf bench NAME` (or `python -m sare_tf.bench NAME`).

Each module measures one thing and writes a JSON report under `runs/bench/`:

- `peak`: this CPU's sustained convolution throughput (GFLOP/s) in float32 and bfloat16, the
  roofline the model benchmarks are read against;
- `extraction`: descriptor extraction images/s, and the backbone's GFLOP/s as a share of the peak;
- `training`: training-step tuples/s of the SARE tuple model;
- `mining`: time and peak memory of hard-negative mining at Pitts30k size;
- `pipeline`: images/s of the tf.data tuple pipeline (decode, resize, augment);
- `retrieval`: exact evaluation wall time and compressed-index recall / speed;
- `serve`: a loopback load test of `sare-tf serve` (latency, throughput, batching, RSS);
- `index`: building and querying a place index of 1,000,000 descriptors;
- `import_checkpoint`: importing a full-size NetVLAD + WPCA checkpoint (time, memory, agreement);
- `models`: today's models (ResNet / DINOv2 + GeM / BoQ / MegaLoc) beside PyTorch's modules.

Every module provides `HELP`, `DESCRIPTION`, `add_arguments(parser)` and `run(args) -> int`,
and imports TensorFlow only inside functions: `sare-tf bench --help` builds every benchmark's
parser, and a child measurement sets its environment (threads, oneDNN) before TensorFlow
loads. Nothing is imported here.
"""

from __future__ import annotations

BENCHMARKS = (
    "peak", "extraction", "training", "mining", "pipeline", "retrieval", "serve", "index",
    "import_checkpoint", "models",
)  # fmt: skip
