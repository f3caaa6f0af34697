"""Throughput of the training tuple pipeline: JPEG decode + resize (+ augmentation), images/s.

Usage:
    sare-tf bench pipeline                       # 480x640 and the demo size (120x160)
    sare-tf bench pipeline --batches 5           # a quick check
    sare-tf bench pipeline --settings 480x640:480x640 480x640:120x160 --augment

Each setting `SOURCE:TARGET` writes (once, cached under --work-dir) a synthetic city whose JPEG
files are SOURCE pixels, builds `make_tuple_dataset` on its training split with random tuples
(`random_tuples`) and times `--batches` batches after one warm-up batch. Images/s counts every
image of every tuple (B * (2 + N) per batch). No model runs: this is the input side only, the
rate the pipeline can feed a model at.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from sare_tf.bench.common import add_json_argument, report_header, write_report

HELP = "Tuple pipeline images/s: JPEG decode + resize (+ augmentation), no model."
DESCRIPTION = __doc__


def _size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def _setting(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    try:
        source, target = text.split(":")
        return _size(source), _size(target)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected SOURCE:TARGET like 480x640:120x160; got {text!r}"
        ) from error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        type=_setting,
        nargs="+",
        default=[((480, 640), (480, 640)), ((120, 160), (120, 160))],
        metavar="SOURCE:TARGET",
        help="JPEG size on disk : size the pipeline resizes to (default: 480x640:480x640 "
        "120x160:120x160)",
    )
    parser.add_argument(
        "--batches", type=int, default=30, help="timed batches per setting (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="tuples per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--num-negatives", type=int, default=10, help="N negatives per tuple (default: %(default)s)"
    )
    parser.add_argument(
        "--augment", action="store_true", help="also apply the default augmentation"
    )
    parser.add_argument(
        "--work-dir",
        default=os.path.join(tempfile.gettempdir(), "sare_tf_bench_pipeline"),
        help="where the synthetic JPEGs are written (reused across runs) (default: %(default)s)",
    )
    add_json_argument(parser, "pipeline")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: F401  (initialised before the timings)

    from sare_tf.data import GeoDataset
    from sare_tf.data.parallelism import PREFETCH_BATCHES, decoders
    from sare_tf.data.tuples import MiningState, make_tuple_dataset, random_tuples
    from sare_tf.synthetic.city import make_synthetic_city

    report = report_header("pipeline")
    results = []
    print(
        f"CPU cores visible: {os.cpu_count()}; tf.data: {decoders()} parallel decoders, "
        f"{PREFETCH_BATCHES} batches ahead, no autotuning"
    )
    for source, target in args.settings:
        city_dir = os.path.join(args.work_dir, f"city_{source[0]}x{source[1]}")
        start = time.perf_counter()
        mats = make_synthetic_city(
            city_dir, preset="tiny", seed=0, image_size=source, streets=(2, 1, 1)
        )
        generation_s = time.perf_counter() - start
        dataset = GeoDataset.from_dbstruct(mats["train"])
        state = MiningState(dataset.num_queries, args.num_negatives, num_db=dataset.num_db)
        state.assign(*random_tuples(dataset, args.num_negatives, seed=0))
        pipeline = make_tuple_dataset(
            dataset, state, image_size=target, batch_size=args.batch_size, augment=args.augment
        ).repeat()
        iterator = iter(pipeline)
        next(iterator)  # warm-up: tracing, thread pools, page cache
        start = time.perf_counter()
        for _ in range(args.batches):
            images, _ = next(iterator)
        elapsed = time.perf_counter() - start
        count = args.batches * args.batch_size * (2 + args.num_negatives)
        row = {
            "source": f"{source[0]}x{source[1]}",
            "target": f"{target[0]}x{target[1]}",
            "augment": args.augment,
            "images": count,
            "seconds": round(elapsed, 3),
            "images_per_s": round(count / elapsed, 1),
            "tuples_per_s": round(args.batches * args.batch_size / elapsed, 2),
            "batch_shape": list(images.shape),
            "jpeg_generation_s": round(generation_s, 2),
        }
        results.append(row)
        print(
            f"{row['source']} JPEG -> {row['target']}{' +augment' if args.augment else ''}: "
            f"{row['images_per_s']} images/s ({row['tuples_per_s']} tuples/s of "
            f"{2 + args.num_negatives}), batch {tuple(images.shape)}, {count} images in "
            f"{elapsed:.2f} s"
        )
    write_report(args.json, report, results=results)
    return 0
