"""`sare-tf index build|add|info|merge`: the persistent place index `localize` and `serve` use."""

from __future__ import annotations

import argparse
import json

from sare_tf.commands._index_flags import add_index_arguments, index_config
from sare_tf.commands._runtime_flag import MODEL_HELP, add_runtime_argument

HELP = "build, extend, inspect or merge a place index (database descriptors + positions, faiss)"
DESCRIPTION = """\
A place index holds the descriptors of a database of geo-tagged images, their positions and
paths, and a faiss index over them, with the fingerprint of the model that computed them
(queries with another model are refused). `build` is resumable: rerun the same command after a
kill. City scale: `build --shard I/N` on N independent workers (Kubernetes Indexed Job, Slurm
array; see deploy/), then `merge` the N shard folders."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="encode a dataset's database images into a new index")
    _add_source(build)
    build.add_argument("--out", required=True, help="the index folder to write")
    build.add_argument("--overwrite", action="store_true", help="replace an index already in --out")
    build.add_argument(
        "--shard", default=None, metavar="I/N", help="encode only part I of N (merge them later)"
    )
    add_index_arguments(build)
    _add_encoding(build)

    add = actions.add_parser("add", help="append a dataset's database images to an index")
    add.add_argument("index_dir", metavar="INDEX", help="the index folder")
    _add_source(add)
    _add_encoding(add)

    info = actions.add_parser("info", help="print an index's manifest (JSON)")
    info.add_argument("index_dir", metavar="INDEX", help="the index folder")

    merge = actions.add_parser("merge", help="combine the complete set of shards of one build")
    merge.add_argument("shards", nargs="+", metavar="SHARD", help="shard folders (any order)")
    merge.add_argument("--out", required=True, help="the merged index folder to write")


def _add_source(parser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    add_runtime_argument(parser)
    parser.add_argument(
        "--dataset",
        required=True,
        help="whose database images to index: .mat dbStruct, .csv (FILE.csv:SET) or folder",
    )
    parser.add_argument("--image-root", default=None, help="folder the image paths are relative to")


def _add_encoding(parser) -> None:
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=512,
        help="images per resumable chunk (default 512): a killed build redoes at most one",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _source(args):
    from sare_tf.artifacts import check_runtime, load_descriptor_model
    from sare_tf.data import GeoDataset

    loaded = load_descriptor_model(args.model)
    check_runtime(args.runtime, loaded)
    if loaded.image_size is None:
        raise ValueError(
            f"{args.model} does not record the image size it was trained at, and an index must "
            "encode every image at one size: export or train it with sare-tf (which record it)."
        )
    dataset = GeoDataset.load(args.dataset, image_root=args.image_root)
    return loaded, dataset


def run(args: argparse.Namespace) -> int:
    from sare_tf.index.store import PlaceIndex, parse_shard

    if args.action == "info":
        print(json.dumps(PlaceIndex.load(args.index_dir).info(), indent=2))
        return 0
    if args.action == "merge":
        merged = PlaceIndex.merge(args.shards, args.out)
        print(f"Merged {len(args.shards)} shards into {merged.folder}: {merged.count} images")
        return 0
    loaded, dataset = _source(args)
    progress = not args.quiet
    if args.action == "build":
        shard = parse_shard(args.shard) if args.shard else None
        index = PlaceIndex.build(
            loaded, dataset.db_image_paths(), dataset.db_utm, args.out, index=index_config(args),
            shard=shard, batch_size=args.batch_size, chunk_size=args.chunk_size,
            progress=progress, frame=dataset.frame, overwrite=args.overwrite,
        )  # fmt: skip
    else:
        index = PlaceIndex.load(args.index_dir).add(
            loaded, dataset.db_image_paths(), dataset.db_utm, batch_size=args.batch_size,
            chunk_size=args.chunk_size, progress=progress, frame=dataset.frame,
        )  # fmt: skip
    skipped = index.manifest["skipped"]["count"]
    print(
        f"Index {index.folder}: {index.count} images ({skipped} unreadable skipped), "
        f"{index.manifest['model']['descriptor_dim']}-d, {index.manifest['index']['kind']} index"
    )
    return 0
