"""Retrieval benchmarks: exact evaluation at Pitts250k-test size, and exact vs compressed indexes.

Part "exact": the wall time of a Recall@N evaluation from descriptors (index build + blocked
top-25 search + Recall@1/5/10/20) for 8,000 queries against 84,000 database descriptors of
4096-d (the size of Pitts250k-test), exact inner-product search (faiss IndexFlatIP), float32.

Part "compressed": exact search against the compressed / approximate indexes (IVF-PQ, IVF-PQ
after an OPQ rotation, IVF-PQ with twice the code size, IVF-PQ with exact re-ranking of its
shortlist, HNSW) on >= 100,000 database descriptors: Recall@N and its difference to exact
(target: within 1 point), bytes per database vector, build time, and query speed.

Both parts use `sare_tf.evaluation.synthetic_descriptors.SyntheticPlaceDescriptors`: unit
descriptors clustered by place on a 30 m grid, places grouped into look-alike "styles" (errors
come from confusable places), so Recall@N is meaningful (exact Recall@1 ~0.85-0.9). They are
isotropic, like PCA-whitened descriptors; `--cmp-variance-decay` gives the compressed part the
unequal coordinate variances of PCA without whitening (where OPQ matters).

Usage:
    sare-tf bench retrieval                                  # both parts, full size
    sare-tf bench retrieval --part exact                     # 8,000 x 84,000 x 4096-d
    sare-tf bench retrieval --part compressed --cmp-dim 256  # 100k x 256-d indexes
    sare-tf bench retrieval --num-queries 800 --num-db 8400 --cmp-num-db 20000  # quick
    sare-tf bench retrieval --part compressed --cmp-variance-decay 1 --cmp-noise 0.6 \
        --indexes ivfpq ivfpq-opq                            # unwhitened-like spectrum

Prints a table per part and writes JSON (default runs/bench/retrieval.json, or
runs/bench/retrieval_<part>.json for one part).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

from sare_tf.bench.common import add_json_argument, default_json, report_header, write_report

HELP = "Exact evaluation time at Pitts250k-test size; exact vs IVF-PQ / HNSW recall and speed."
DESCRIPTION = __doc__

NS = (1, 5, 10, 20)
DEPTH = 25


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    header = [title for _, title in columns]
    cells = [[str(row.get(key, "")) for key, _ in columns] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=True)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def run_exact(args) -> dict:
    from sare_tf.evaluation.protocols import ranked_search
    from sare_tf.evaluation.recall import recall_from_ranking
    from sare_tf.evaluation.synthetic_descriptors import SyntheticPlaceDescriptors
    from sare_tf.index.faiss_search import build_index

    print(
        f"\n[exact] {args.num_queries} queries x {args.num_db} database descriptors, "
        f"{args.dim}-d float32, faiss IndexFlatIP, top-{DEPTH} in blocks of {args.block_size}"
    )
    synthetic = SyntheticPlaceDescriptors(
        dim=args.dim, num_places=max(1, args.num_db // 8), seed=args.seed
    )
    (xb, db_utm), generate_db = timed(synthetic.sample, args.num_db, seed_offset=1)
    (xq, query_utm), generate_q = timed(synthetic.sample, args.num_queries, seed_offset=2)
    print(f"  generated synthetic descriptors in {generate_db + generate_q:.1f} s (not counted)")
    import keras  # noqa: F401  (the progress bar's import must not be timed as search)

    index, build_s = timed(build_index, xb, "flat")
    del xb  # the index holds its own copy
    ranked, search_s = timed(
        ranked_search, index, xq, DEPTH, block_size=args.block_size, progress=True
    )
    result, recall_s = timed(recall_from_ranking, ranked, query_utm, db_utm, NS, 25.0)
    total = build_s + search_s + recall_s
    flops = 2.0 * args.num_queries * args.num_db * args.dim
    row = {
        "queries": args.num_queries,
        "db": args.num_db,
        "dim": args.dim,
        "build_s": round(build_s, 2),
        "search_s": round(search_s, 2),
        "recall_s": round(recall_s, 3),
        "total_s": round(total, 2),
        "ms_per_query": round(1000 * search_s / args.num_queries, 3),
        "gflops": round(flops / search_s / 1e9, 1),
        **{f"R@{n}": round(100 * result.recalls[n], 2) for n in NS},
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }
    print(
        table(
            [row],
            [
                ("queries", "queries"),
                ("db", "db"),
                ("dim", "dim"),
                ("build_s", "build s"),
                ("search_s", "search s"),
                ("recall_s", "recall s"),
                ("total_s", "TOTAL s"),
                ("ms_per_query", "ms/query"),
                ("gflops", "GFLOP/s"),
                *((f"R@{n}", f"R@{n}") for n in NS),
                ("peak_rss_gb", "peak RSS GB"),
            ],
        )
    )
    return row


INDEX_CHOICES = ("ivfpq", "ivfpq-opq", "ivfpq-m2x", "ivfpq-opq-m2x", "ivfpq-refine", "hnsw")


def index_configs(args) -> list[tuple[str, str, dict]]:
    """`(label, kind, params)` for exact search and each of `args.indexes`, in that order."""
    from sare_tf.index.faiss_search import default_pq_m

    configs = [("flat", "flat", {})]
    pq = {"nlist": args.nlist, "m": args.pq_m, "nbits": args.nbits, "nprobe": args.nprobe}
    large_m = args.large_pq_m or 2 * (args.pq_m or default_pq_m(args.cmp_dim))
    variants = {
        "ivfpq": ("ivfpq", pq),
        "ivfpq-opq": ("ivfpq+opq", {**pq, "opq": True}),
        "ivfpq-m2x": ("ivfpq", {**pq, "m": large_m}),
        "ivfpq-opq-m2x": ("ivfpq+opq", {**pq, "m": large_m, "opq": True}),
        "ivfpq-refine": ("ivfpq+refine", {**pq, "refine_factor": args.refine_factor}),
    }
    for name in args.indexes:
        if name == "hnsw":
            configs.append(("hnsw", "hnsw", {"hnsw_m": args.hnsw_m, "ef_search": args.ef_search}))
        else:
            label, params = variants[name]
            configs.append((label, "ivfpq", params))
    return configs


def bytes_per_vector(kind: str, params: dict, dim: int, faiss_index) -> float:
    """Memory per database vector; fixed costs (coarse centroids, codebooks, the OPQ matrix) are
    left out."""
    if kind == "flat":
        return 4.0 * dim
    if kind == "hnsw":
        # The vector plus ~2 M int32 neighbour links on level 0 (upper levels add ~1/M of that).
        return 4.0 * dim + 4.0 * 2 * params["hnsw_m"]
    from sare_tf.index.faiss_search import inner_ivfpq

    pq = inner_ivfpq(faiss_index).pq
    code = pq.M * pq.nbits / 8.0 + 8.0  # PQ code + stored id
    return code + (4.0 * dim if params.get("refine_factor") else 0.0)


def transform_spectrum(x, variance_decay: float):
    """Scales coordinate i (1-based) by i^(-variance_decay / 2) and re-normalises, in place.

    Coordinate variances then fall off as i^-variance_decay, like PCA-reduced descriptors
    without whitening (PCA orders dimensions by variance), the case OPQ is meant for.
    """
    import numpy as np

    if variance_decay:
        x *= (np.arange(1, x.shape[1] + 1, dtype=np.float64) ** (-variance_decay / 2)).astype(
            np.float32
        )
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


COMPRESSED_COLUMNS = [
    ("index", "index"),
    ("params", "parameters"),
    ("build_s", "build s"),
    ("search_s", "search s"),
    ("ms_per_query", "ms/query"),
    ("queries_per_s", "queries/s"),
    ("bytes_per_vector", "B/vector"),
    *((f"R@{n}", f"R@{n}") for n in NS),
    ("max_delta_points", "max |dR| pts"),
]


def _compressed_row(label, kind, params, index, seconds, recalls, exact, args) -> dict:
    """One index's row of the compressed table: its settings, times, memory and recalls."""
    from sare_tf.index.faiss_search import inner_ivfpq

    build_s, search_s = seconds
    described = {k: v for k, v in params.items() if v is not None and k != "opq"}
    if kind == "ivfpq":
        ivfpq = inner_ivfpq(index)
        described.update(nlist=ivfpq.nlist, m=ivfpq.pq.M, nbits=ivfpq.pq.nbits, nprobe=ivfpq.nprobe)
    return {
        "index": label,
        "params": " ".join(f"{k}={v}" for k, v in described.items()) or "-",
        "build_s": round(build_s, 2),
        "search_s": round(search_s, 2),
        "ms_per_query": round(1000 * search_s / args.cmp_num_queries, 3),
        "queries_per_s": round(args.cmp_num_queries / search_s, 1),
        "bytes_per_vector": round(bytes_per_vector(kind, params, args.cmp_dim, index), 1),
        **{f"R@{n}": round(recalls[n], 2) for n in NS},
        "max_delta_points": round(max(abs(recalls[n] - exact[n]) for n in NS), 2),
    }


def run_compressed(args) -> dict:
    from sare_tf.evaluation.protocols import ranked_search
    from sare_tf.evaluation.recall import recall_from_ranking
    from sare_tf.evaluation.synthetic_descriptors import SyntheticPlaceDescriptors
    from sare_tf.index.faiss_search import build_index

    spectrum = (
        f", coordinate variance ~ i^-{args.cmp_variance_decay:g}" if args.cmp_variance_decay else ""
    )
    print(
        f"\n[compressed] {args.cmp_num_queries} queries x {args.cmp_num_db} database descriptors, "
        f"{args.cmp_dim}-d float32{spectrum}"
    )
    synthetic = SyntheticPlaceDescriptors(
        dim=args.cmp_dim,
        num_places=max(1, args.cmp_num_db // 8),
        noise=args.cmp_noise,
        seed=args.seed,
    )
    xb, db_utm = synthetic.sample(args.cmp_num_db, seed_offset=1)
    xq, query_utm = synthetic.sample(args.cmp_num_queries, seed_offset=2)
    transform_spectrum(xb, args.cmp_variance_decay)
    transform_spectrum(xq, args.cmp_variance_decay)
    rows, exact = [], None
    for label, kind, params in index_configs(args):
        index, build_s = timed(build_index, xb, kind, **params)
        ranked, search_s = timed(ranked_search, index, xq, DEPTH, block_size=args.block_size)
        result = recall_from_ranking(ranked, query_utm, db_utm, NS, 25.0)
        recalls = {n: 100 * result.recalls[n] for n in NS}
        if exact is None:
            exact = recalls
        rows.append(
            _compressed_row(label, kind, params, index, (build_s, search_s), recalls, exact, args)
        )
        del index
    for row in rows:
        row["within_1_point"] = row["max_delta_points"] <= 1.0
    print(table(rows, COMPRESSED_COLUMNS))
    return {
        "queries": args.cmp_num_queries,
        "db": args.cmp_num_db,
        "dim": args.cmp_dim,
        "noise": synthetic.noise,
        "variance_decay": args.cmp_variance_decay,
        "place_spread": synthetic.place_spread,
        "places_per_style": synthetic.places_per_style,
        "indexes": rows,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sizes of both parts, the indexes compared, the run."""
    parser.add_argument(
        "--part",
        choices=("exact", "compressed", "both"),
        default="both",
        help="which benchmark to run (default: %(default)s)",
    )
    parser.add_argument("--num-queries", type=int, default=8000, help="exact part: queries")
    parser.add_argument("--num-db", type=int, default=84000, help="exact part: database size")
    parser.add_argument("--dim", type=int, default=4096, help="exact part: descriptor size")
    parser.add_argument(
        "--cmp-num-queries", type=int, default=5000, help="compressed part: queries"
    )
    parser.add_argument(
        "--cmp-num-db", type=int, default=100_000, help="compressed part: database size"
    )
    parser.add_argument(
        "--cmp-dim",
        type=int,
        default=256,
        help="compressed part: descriptor size (256: PCA-reduced descriptors of large maps)",
    )
    parser.add_argument(
        "--cmp-noise",
        type=float,
        default=None,
        help="compressed part: per-image appearance noise (default (D/256)^(1/4); lower it with "
        "--cmp-variance-decay to keep exact Recall@1 comparable)",
    )
    parser.add_argument(
        "--cmp-variance-decay",
        type=float,
        default=0.0,
        help="compressed part: scale coordinate i so its variance falls as i^-this, like "
        "unwhitened PCA output (default 0: isotropic, like whitened descriptors)",
    )
    _add_index_arguments(parser.add_argument_group("indexes of the compressed part"))
    parser.add_argument("--block-size", type=int, default=2048, help="queries per faiss call")
    parser.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    add_json_argument(
        parser,
        "retrieval",
        default_help="runs/bench/retrieval.json, retrieval_<part>.json for one part",
    )


def _add_index_arguments(parser) -> None:
    parser.add_argument(
        "--indexes",
        nargs="+",
        default=["ivfpq", "ivfpq-opq", "ivfpq-m2x", "ivfpq-refine", "hnsw"],
        choices=INDEX_CHOICES,
        help="indexes compared with exact search: IVF-PQ, with an OPQ rotation (-opq), with "
        "--large-pq-m sub-quantizers (-m2x), with exact re-ranking (-refine), HNSW "
        "(default: %(default)s)",
    )
    parser.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~4 sqrt(N))")
    parser.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantizers (default D/8)")
    parser.add_argument(
        "--large-pq-m",
        type=int,
        default=None,
        help="PQ sub-quantizers of the -m2x indexes (default 2 x --pq-m: 64 at 256-d)",
    )
    parser.add_argument("--nbits", type=int, default=8, help="bits per PQ code (default 8)")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF cells visited (default 32)")
    parser.add_argument(
        "--refine-factor", type=int, default=10, help="ivfpq-refine: re-rank k x this (default 10)"
    )
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree (default 32)")
    parser.add_argument("--ef-search", type=int, default=128, help="HNSW search beam (default 128)")


def run(args: argparse.Namespace) -> int:
    import faiss
    import numpy as np

    report = report_header("retrieval")
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    report["machine"] = {
        "cpu_count": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    if args.part in ("exact", "both"):
        report["exact"] = run_exact(args)
    if args.part in ("compressed", "both"):
        report["compressed"] = run_compressed(args)
    report["machine"]["load_average_end"] = os.getloadavg()
    print()
    # Runs of one part each must not overwrite each other's report.
    name = "retrieval" if args.part == "both" else f"retrieval_{args.part}"
    write_report(args.json or default_json(name), report)
    return 0
