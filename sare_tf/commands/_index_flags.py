"""The faiss index flags shared by `sare-tf evaluate` and `sare-tf index build`, and the
`IndexConfig` they make.

`--index-type` names the kind of faiss index; `--index` names a place index folder (in
`localize` and `serve`). The type was once `--index` here too: that spelling still works, with
a warning, so that scripts keep running.
"""

from __future__ import annotations

import argparse
import sys

INDEX_TYPES = ("flat", "ivfpq", "hnsw")


class _RenamedIndexFlag(argparse.Action):
    """`--index TYPE`, the former name of `--index-type` in these commands."""

    def __call__(self, parser, namespace, value, option_string=None):
        if value not in INDEX_TYPES:
            parser.error(
                f"--index is a place index folder in `localize` and `serve`; here the faiss "
                f"index kind is --index-type, one of {', '.join(INDEX_TYPES)}. Received: "
                f"--index {value}"
            )
        print(f"warning: --index {value} is now --index-type {value}", file=sys.stderr)
        namespace.index_type = value


def add_index_arguments(parser) -> None:
    """--index-type and the IVF-PQ / HNSW settings (`sare_tf.index.faiss_search.IndexConfig`)."""
    parser.add_argument(
        "--index-type",
        default="flat",
        choices=INDEX_TYPES,
        help="faiss index: exact 'flat', compressed 'ivfpq', graph 'hnsw' (default: %(default)s)",
    )
    parser.add_argument("--index", action=_RenamedIndexFlag, help=argparse.SUPPRESS)
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


def index_config(args):
    """The `IndexConfig` the parsed flags describe (settings of other index kinds ignored)."""
    from sare_tf.index.faiss_search import IndexConfig

    if args.index_type == "ivfpq":
        return IndexConfig(
            "ivfpq", nlist=args.nlist, m=args.pq_m, nbits=args.nbits, nprobe=args.nprobe,
            refine_factor=args.refine_factor, opq=args.opq,
        )  # fmt: skip
    if args.index_type == "hnsw":
        return IndexConfig("hnsw", ef_search=args.ef_search)
    return IndexConfig("flat")
