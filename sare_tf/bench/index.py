"""A city-scale place index: 1,000,000 database descriptors built, queried and checked.

Synthetic place descriptors (`SyntheticPlaceDescriptors`, 256-d: a realistic size after PCA
whitening) are written to disk block by block and indexed with `PlaceIndex.from_descriptors`
(IVF-PQ with exact re-ranking by default). Three fresh processes: build (wall time and peak
memory of that process), query (latency of single queries, Recall@1 at 25 m), and the exact
reference (blocked brute force over the memory-mapped descriptors).
Goals on a 2-core machine: build < 10 min, peak < 4 GiB, < 5 ms per query, Recall@1 within one
point of exact search.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np

from sare_tf.bench.common import (
    add_json_argument,
    peak_rss_gib,
    report_header,
    run_child,
    write_report,
)

HELP = "build and query a place index of 1,000,000 descriptors (time, peak memory, recall)"
DESCRIPTION = __doc__
GOALS = {"build_seconds": 600, "peak_gib": 4.0, "query_ms": 5.0, "recall_points": 1.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-db", type=int, default=1_000_000, help="database size")
    parser.add_argument("--num-queries", type=int, default=1000, help="queries timed and scored")
    parser.add_argument("--dim", type=int, default=256, help="descriptor size (default 256)")
    parser.add_argument("--index", default="ivfpq", choices=("flat", "ivfpq", "hnsw"))
    parser.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~4 sqrt(N))")
    parser.add_argument("--pq-m", type=int, default=32, help="PQ sub-quantizers (default 32)")
    parser.add_argument("--nprobe", type=int, default=64, help="IVF cells searched (default 64)")
    parser.add_argument(
        "--refine-factor", type=int, default=100, help="exact re-ranking of k x this (default 100)"
    )
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--child", default=None, choices=("build", "query", "exact"), help=argparse.SUPPRESS
    )
    add_json_argument(parser, "index")


def _synthetic(args):
    from sare_tf.evaluation.synthetic_descriptors import SyntheticPlaceDescriptors

    return SyntheticPlaceDescriptors(
        dim=args.dim, num_places=max(1, args.num_db // 8), seed=args.seed
    )


def _build(args) -> dict:
    from sare_tf.index.store import PlaceIndex

    start = time.perf_counter()
    path = os.path.join(args.workdir, "descriptors.npy")
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(args.num_db, args.dim)
    )
    _, positions = _synthetic(args).sample(args.num_db, seed_offset=1, out=out)
    out.flush()
    del out
    generated = time.perf_counter() - start
    from sare_tf.index.faiss_search import as_index_config

    params = {"m": args.pq_m, "nprobe": args.nprobe, "refine_factor": args.refine_factor}
    params = params if args.index == "ivfpq" else {}
    config = as_index_config(args.index, nlist=args.nlist, **params)
    start = time.perf_counter()
    index = PlaceIndex.from_descriptors(
        path, positions, [f"synthetic/{i:07d}.jpg" for i in range(args.num_db)],
        os.path.join(args.workdir, "index"), {"fingerprint": "synthetic", "image_size": None},
        index=config,
    )  # fmt: skip
    return {
        "generate_seconds": round(generated, 1),
        "build_seconds": round(time.perf_counter() - start, 1),
        "count": index.count,
        "peak_gib": peak_rss_gib(),
        "index_bytes": os.path.getsize(
            os.path.join(index.folder, index.manifest["files"]["faiss"])
        ),
    }


def _queries(args):
    return _synthetic(args).sample(args.num_queries, seed_offset=2)


def _query(args) -> dict:
    from sare_tf.index.store import PlaceIndex

    index = PlaceIndex.load(os.path.join(args.workdir, "index"))
    xq, query_utm = _queries(args)
    index.search(xq[:10], 1)  # warm-up
    latencies, top1 = [], []
    for row in xq:
        start = time.perf_counter()
        _, ids = index.search(row[None], 1)
        latencies.append(time.perf_counter() - start)
        top1.append(int(ids[0, 0]))
    start = time.perf_counter()
    index.search(xq, 10)
    batch_seconds = time.perf_counter() - start
    found = index.positions[np.asarray(top1)]
    correct = np.linalg.norm(found - query_utm, axis=1) <= 25.0
    latencies = np.asarray(latencies) * 1000
    return {
        "query_ms_median": round(float(np.median(latencies)), 3),
        "query_ms_p99": round(float(np.percentile(latencies, 99)), 3),
        "batch_ms_per_query": round(1000 * batch_seconds / len(xq), 3),
        "recall@1": float(correct.mean()),
        "top1": top1,
        "peak_gib": peak_rss_gib(),
    }


def _exact(args) -> dict:
    descriptors = np.load(
        os.path.join(args.workdir, "index", _files(args)["descriptors"]), mmap_mode="r"
    )
    positions = np.load(os.path.join(args.workdir, "index", _files(args)["positions"]))
    xq, query_utm = _queries(args)
    best = np.full(len(xq), -np.inf, np.float32)
    best_id = np.zeros(len(xq), np.int64)
    for first in range(0, len(descriptors), 65536):
        scores = xq @ np.asarray(descriptors[first : first + 65536]).T
        block_best = scores.argmax(axis=1)
        better = scores[np.arange(len(xq)), block_best] > best
        best[better] = scores[np.arange(len(xq)), block_best][better]
        best_id[better] = first + block_best[better]
    correct = np.linalg.norm(positions[best_id] - query_utm, axis=1) <= 25.0
    return {"recall@1": float(correct.mean()), "top1": best_id.tolist()}


def _files(args) -> dict:
    with open(os.path.join(args.workdir, "index", "manifest.json")) as handle:
        return json.load(handle)["files"]


def run(args: argparse.Namespace) -> int:
    if args.child:
        print(json.dumps({"build": _build, "query": _query, "exact": _exact}[args.child](args)))
        return 0
    report = report_header("index")
    scratch = args.workdir or tempfile.mkdtemp(prefix="sare-bench-index-")
    flags = [
        "--num-db", str(args.num_db), "--num-queries", str(args.num_queries), "--dim", str(args.dim),
        "--index", args.index, "--pq-m", str(args.pq_m), "--nprobe", str(args.nprobe),
        "--refine-factor", str(args.refine_factor), "--workdir", scratch, "--seed", str(args.seed),
    ]  # fmt: skip
    if args.nlist:
        flags += ["--nlist", str(args.nlist)]
    try:
        print(f"building an index of {args.num_db} x {args.dim}-d descriptors ...", flush=True)
        build = run_child("index", [*flags, "--child", "build"])
        query = run_child("index", [*flags, "--child", "query"])
        exact = run_child("index", [*flags, "--child", "exact"])
    finally:
        if not args.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    agreement = float(np.mean(np.asarray(query.pop("top1")) == np.asarray(exact.pop("top1"))))
    results = {
        "num_db": args.num_db, "dim": args.dim, "index": args.index, "build": build,
        "query": query, "exact": exact, "top1_agreement": agreement,
        "recall_points_lost": round(100 * (exact["recall@1"] - query["recall@1"]), 2),
        "goals": GOALS,
    }  # fmt: skip
    print(
        f"build {build['build_seconds']} s (+{build['generate_seconds']} s generating), peak "
        f"{build['peak_gib']} GiB; query {query['query_ms_median']} ms median, "
        f"{query['query_ms_p99']} ms p99 (batch {query['batch_ms_per_query']} ms/query); "
        f"Recall@1 {100 * query['recall@1']:.2f} vs exact {100 * exact['recall@1']:.2f} "
        f"(top-1 agreement {100 * agreement:.1f} %)"
    )
    write_report(args.json, report, results=results)
    return 0
