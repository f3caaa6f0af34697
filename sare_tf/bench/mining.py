"""Benchmark of `sare_tf.mining.mine_tuples` on synthetic descriptors of Pitts30k size.

Each setting runs in a fresh Python process so that its peak memory is its own. The process
makes random unit-norm descriptors (queries stored as float16, the database as float32, the
mining path's native layouts) and a Pittsburgh-like map (places of 24 views, queries and
database scattered over the same square), resets the kernel's peak-RSS counter, then times
one `mine_tuples` call. Reported peak memory is the process's resident-set high-water mark
during mining, so it INCLUDES the input descriptors (listed separately) and the Python /
numpy / faiss runtime.

Usage:
    sare-tf bench mining                        # Pitts30k size, 4096-d and 32768-d
    sare-tf bench mining --dims 4096 --num-queries 1000 --num-db 2000   # quick check
    sare-tf bench mining --json runs/bench/mining.json

Targets (issue 5, 2-core machine): < 10 s at 4096-d, < 60 s at 32768-d, peak < 3 GiB at 32768-d.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sare_tf.bench.common import (
    add_json_argument,
    process_status_kib,
    report_header,
    run_child,
    write_report,
)

HELP = "Time and peak memory of hard-negative mining at Pitts30k size (numpy / faiss, no model)."
DESCRIPTION = __doc__

TARGET_SECONDS = {4096: 10.0, 32768: 60.0}
TARGET_PEAK_GIB = {32768: 3.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=[4096, 32768],
        help="descriptor sizes to run (default: %(default)s)",
    )
    parser.add_argument(
        "--num-queries", type=int, default=7416, help="training queries (default: %(default)s)"
    )
    parser.add_argument(
        "--num-db", type=int, default=10000, help="database images (default: %(default)s)"
    )
    parser.add_argument(
        "--num-negatives", type=int, default=10, help="negatives per tuple (default: %(default)s)"
    )
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=1000,
        help="random negatives sampled per query (default: %(default)s)",
    )
    parser.add_argument(
        "--images-per-place",
        type=int,
        default=24,
        help="views sharing one position (default: %(default)s)",
    )
    parser.add_argument(
        "--area-side-m",
        type=float,
        default=300.0,
        help="side of the square map in metres (sets how many positives a query has) (default: %(default)s)",
    )
    parser.add_argument(
        "--with-cache", action="store_true", help="also pass a negative cache of N ids per query"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic data (default: %(default)s)"
    )
    add_json_argument(parser, "mining")
    parser.add_argument("--child-dim", type=int, default=None, help=argparse.SUPPRESS)


def _unit_rows(rng, num, dim, dtype, chunk=1024):
    import numpy as np

    out = np.empty((num, dim), dtype=dtype)
    for start in range(0, num, chunk):
        block = rng.standard_normal((min(chunk, num - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def _positions(rng, num, images_per_place, side):
    import numpy as np

    places = rng.uniform(0, side, size=(-(-num // images_per_place), 2))
    return np.repeat(places, images_per_place, axis=0)[:num]


def _reset_peak_rss() -> str:
    """Resets the peak-RSS counter so a later peak is the measured work's own (Linux >= 4.0);
    says which counter the peak will come from."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return "VmHWM after reset"
    except OSError:
        return "ru_maxrss (includes data generation)"


def _peak_rss_kib(peak_source: str) -> int:
    if peak_source.startswith("VmHWM"):
        return process_status_kib("VmHWM")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child_measurement(args: argparse.Namespace) -> dict:
    """Makes the data and times one `mine_tuples` call in this process (run it in a fresh one)."""
    import numpy as np
    from scipy.spatial import cKDTree

    from sare_tf.mining import mine_tuples

    dim = args.child_dim
    rng = np.random.default_rng(args.seed)
    query_desc = _unit_rows(rng, args.num_queries, dim, np.float16)
    db_desc = _unit_rows(rng, args.num_db, dim, np.float32)
    db_utm = _positions(rng, args.num_db, args.images_per_place, args.area_side_m)
    query_utm = _positions(rng, args.num_queries, args.images_per_place, args.area_side_m)
    tree = cKDTree(db_utm)
    train_positives = [
        np.sort(np.array(ids, dtype=np.int64)) for ids in tree.query_ball_point(query_utm, 10.0)
    ]
    non_negatives = [
        np.sort(np.array(ids, dtype=np.int64)) for ids in tree.query_ball_point(query_utm, 25.0)
    ]
    cache = None
    if args.with_cache:
        cache = rng.integers(0, args.num_db, size=(args.num_queries, args.num_negatives))

    rss_before = process_status_kib("VmRSS")
    peak_source = _reset_peak_rss()
    start = time.perf_counter()
    positive_idx, negative_idx, valid = mine_tuples(
        query_desc,
        db_desc,
        train_positives,
        non_negatives,
        num_negatives=args.num_negatives,
        num_candidates=args.num_candidates,
        negative_cache=cache,
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    peak_kib = _peak_rss_kib(peak_source)
    return {
        "dim": dim,
        "num_queries": args.num_queries,
        "num_db": args.num_db,
        "num_negatives": args.num_negatives,
        "num_candidates": args.num_candidates,
        "with_cache": bool(args.with_cache),
        "seconds": round(seconds, 2),
        "peak_rss_gib": round(peak_kib / 2**20, 3),
        "rss_before_mining_gib": round(rss_before / 2**20, 3),
        "input_gib": round((query_desc.nbytes + db_desc.nbytes) / 2**30, 3),
        "peak_source": peak_source,
        "mean_positives": round(float(np.mean([len(p) for p in train_positives])), 1),
        "mean_non_negatives": round(float(np.mean([len(n) for n in non_negatives])), 1),
        "valid_queries": int(valid.sum()),
        "target_seconds": TARGET_SECONDS.get(dim),
        "target_peak_gib": TARGET_PEAK_GIB.get(dim),
    }


def run(args: argparse.Namespace) -> int:
    if args.child_dim is not None:
        print(json.dumps(run_child_measurement(args)))
        return 0
    report = report_header("mining")
    results = []
    for dim in args.dims:
        flags = ["--child-dim", str(dim)]
        for flag in ("num_queries", "num_db", "num_negatives", "num_candidates"):
            flags += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        flags += [
            "--images-per-place", str(args.images_per_place),
            "--area-side-m", str(args.area_side_m),
            "--seed", str(args.seed),
        ]  # fmt: skip
        if args.with_cache:
            flags.append("--with-cache")
        print(f"running {dim}-d ...", file=sys.stderr, flush=True)
        results.append(run_child("mining", flags))

    header = f"{'dim':>6} {'Q x Ndb':>13} {'seconds':>8} {'target':>7} {'peak GiB':>9} {'inputs GiB':>10} {'pos/q':>6} {'nonneg/q':>8}"
    print(header)
    for r in results:
        target = f"<{r['target_seconds']:.0f}" if r["target_seconds"] else "-"
        print(
            f"{r['dim']:>6} {r['num_queries']:>6}x{r['num_db']:<6} {r['seconds']:>8.2f} {target:>7} "
            f"{r['peak_rss_gib']:>9.2f} {r['input_gib']:>10.2f} {r['mean_positives']:>6.1f} "
            f"{r['mean_non_negatives']:>8.1f}"
        )
    print(f"peak = {results[0]['peak_source']}; it includes the inputs and the runtime.")
    write_report(args.json, report, results=results)
    return 0
