"""The faiss index flags shared by `sare-tf evaluate` and `sare-tf index build`."""

from __future__ import annotations


def add_index_arguments(parser) -> None:
    """--index and the IVF-PQ / HNSW settings (`sare_tf.index.faiss_search.IndexConfig`)."""
    parser.add_argument(
        "--index",
        default="flat",
        choices=("flat", "ivfpq", "hnsw"),
        help="faiss index: exact 'flat', compressed 'ivfpq', graph 'hnsw' (default: %(default)s)",
    )
    parser.add_argument("--nlist", type=int, default=None, help="IVF-PQ cells (default ~4 sqrt(N))")
    parser.add_argument(
        "--pq-m",
        type=int,
        default=None,
        help="IVF-PQ sub-quantizers, divides D (default D/8, <=64)",
    )
    parser.add_argument("--nbits", type=int, default=8, help="IVF-PQ bits per code (default 8)")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF-PQ cells searched (default 32)")
    parser.add_argument(
        "--refine-factor",
        type=int,
        default=0,
        help="IVF-PQ: re-rank k x this many candidates with exact vectors (default 0: off)",
    )
    parser.add_argument(
        "--opq",
        action="store_true",
        help="IVF-PQ: learn an OPQ rotation first (same memory; ~1 point more Recall@1 in our "
        "benchmark at m=32, 6-9x slower to build; needs >= D database images)",
    )
    parser.add_argument("--ef-search", type=int, default=128, help="HNSW search beam (default 128)")


def index_params(args) -> dict:
    """The `IndexConfig` fields the parsed flags set for the chosen --index."""
    if args.index == "ivfpq":
        return {
            "nlist": args.nlist,
            "m": args.pq_m,
            "nbits": args.nbits,
            "nprobe": args.nprobe,
            "refine_factor": args.refine_factor,
            "opq": args.opq,
        }
    if args.index == "hnsw":
        return {"ef_search": args.ef_search}
    return {}
