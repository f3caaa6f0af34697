"""`sare-tf index build|add|info|merge`: the persistent place index `localize` and `serve` use."""

from __future__ import annotations

import argparse
import json

from sare_tf.commands._index_flags import add_index_arguments, index_config
from sare_tf.config_options import add_config_arguments, add_quiet_argument, config_from_args
from sare_tf.index.settings import IndexBuildSettings, IndexSourceSettings

HELP = "build, extend, inspect or merge a place index (database descriptors + positions, faiss)"
DESCRIPTION = """\
A place index holds the descriptors of a database of geo-tagged images, their positions and
paths, and a faiss index over them, with the fingerprint of the model that computed them
(queries with another model are refused). `build` is resumable: rerun the same command after a
kill. City scale: `build --shard I/N` on N independent workers (Kubernetes Indexed Job, Slurm
array; see deploy/), then `merge` the N shard folders."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """build: `IndexBuildSettings` + `IndexConfig`; add: INDEX + `IndexSourceSettings`."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="encode a dataset's database images into a new index")
    add_config_arguments(build, IndexBuildSettings)
    add_index_arguments(build)

    add = actions.add_parser("add", help="append a dataset's database images to an index")
    add.add_argument("index_dir", metavar="INDEX", help="the index folder")
    add_config_arguments(add, IndexSourceSettings)

    info = actions.add_parser("info", help="print an index's manifest (JSON)")
    info.add_argument("index_dir", metavar="INDEX", help="the index folder")
    add_quiet_argument(info)

    merge = actions.add_parser("merge", help="combine the complete set of shards of one build")
    merge.add_argument("shards", nargs="+", metavar="SHARD", help="shard folders (any order)")
    merge.add_argument("--out", required=True, help="the merged index folder to write")
    add_quiet_argument(merge)


def _source(settings):
    from sare_tf.artifacts import check_runtime, load_descriptor_model
    from sare_tf.data import GeoDataset

    loaded = load_descriptor_model(settings.model)
    check_runtime(settings.runtime, loaded)
    if loaded.image_size is None:
        raise ValueError(
            f"{settings.model} does not record the image size it was trained at, and an index must "
            "encode every image at one size: export or train it with sare-tf (which record it)."
        )
    dataset = GeoDataset.load(settings.dataset, image_root=settings.image_root)
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
    building = args.action == "build"
    settings = config_from_args(IndexBuildSettings if building else IndexSourceSettings, args)
    index_settings = index_config(args) if building else None  # bad flags fail before loading
    loaded, dataset = _source(settings)
    progress = not settings.quiet
    if building:
        shard = parse_shard(settings.shard) if settings.shard else None
        index = PlaceIndex.build(
            loaded, dataset.db_image_paths(), dataset.db_utm, settings.out, index=index_settings,
            shard=shard, batch_size=settings.batch_size, chunk_size=settings.chunk_size,
            progress=progress, frame=dataset.frame, overwrite=settings.overwrite,
        )  # fmt: skip
    else:
        index = PlaceIndex.load(args.index_dir).add(
            loaded, dataset.db_image_paths(), dataset.db_utm, batch_size=settings.batch_size,
            chunk_size=settings.chunk_size, progress=progress, frame=dataset.frame,
        )  # fmt: skip
    skipped = index.manifest["skipped"]["count"]
    print(
        f"Index {index.folder}: {index.count} images ({skipped} unreadable skipped), "
        f"{index.manifest['model']['descriptor_dim']}-d, {index.manifest['index']['kind']} index"
    )
    return 0
