"""The faiss index flags of `sare-tf evaluate` and `sare-tf index build`, made from `IndexConfig`.

`--index-type` names the kind of faiss index; `--index` names a place index folder (in
`localize` and `serve`). The type was once `--index` here too: that spelling still works, with
a warning, so that scripts keep running.
"""

from __future__ import annotations

import argparse
import sys

from sare_tf.config_options import add_config_arguments, config_from_args
from sare_tf.index.config import INDEX_TYPES, IndexConfig


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
        namespace.kind = value


def add_index_arguments(parser) -> None:
    """The flags of `IndexConfig`'s fields (`--index-type`, the IVF-PQ and HNSW settings)."""
    add_config_arguments(parser, IndexConfig)
    parser.add_argument("--index", action=_RenamedIndexFlag, help=argparse.SUPPRESS)


def index_config(args: argparse.Namespace) -> IndexConfig:
    """The `IndexConfig` the parsed flags describe."""
    return config_from_args(IndexConfig, args)
