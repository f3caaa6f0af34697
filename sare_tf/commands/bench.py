"""`sare-tf bench NAME`: run one of the benchmarks of `sare_tf.bench`."""

from __future__ import annotations

import argparse
import importlib

from sare_tf.config_options import add_quiet_argument

HELP = "Benchmarks: conv peak, extraction, training, mining, pipeline, retrieval, serve, index."
DESCRIPTION = (
    "Measures speed and memory on this machine and writes a JSON report under runs/bench/. "
    "Every report starts with the CPU (model, cores, native bf16 support) and its load; "
    "`peak` measures the convolution GFLOP/s this CPU sustains, and `extraction` and "
    "`training` print the share of it they reach, so a slow machine is told apart from slow "
    "code. Run `sare-tf bench NAME --help` for a benchmark's flags."
)


def _module(name: str):
    return importlib.import_module(f"sare_tf.bench.{name}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sare_tf.bench import BENCHMARKS

    subparsers = parser.add_subparsers(dest="benchmark", metavar="NAME", title="benchmarks")
    for name in BENCHMARKS:
        module = _module(name)
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        add_quiet_argument(sub)
    parser.set_defaults(_bench_parser=parser)


def run(args: argparse.Namespace) -> int:
    if not args.benchmark:
        args._bench_parser.print_help()
        return 0
    return int(_module(args.benchmark).run(args) or 0)
