"""Handing a retrieval to hloc (Hierarchical-Localization, Sarlin et al. 2019): its pairs file and
its HDF5 file of global descriptors, written in the layout hloc's own readers expect.

- Pairs (`pairs_from_retrieval.py` writes them, `utils/parsers.parse_retrieval` reads them): one
  line per pair, `<query name> <database name>` separated by one space, the query's pairs in
  retrieval order; names are image paths relative to the image folder hloc is given, so they
  may not contain whitespace.
- Global descriptors (`extract_features.py` writes them, `pairs_from_retrieval.py` and
  `utils/io.list_h5_names` read them): one HDF5 group per image, named by its relative path (a
  path with `/` makes nested groups), holding the dataset `global_descriptor` (`[D]` float32)
  and `image_size` (`[2]`, width and height of the original image).
"""

from __future__ import annotations

import os

import h5py
import numpy as np


def check_names(names) -> list[str]:
    """Relative image names usable in hloc's files (no whitespace, not absolute)."""
    names = [os.fspath(n).replace(os.sep, "/") for n in names]
    for name in names:
        if not name or name.startswith("/") or any(c.isspace() for c in name):
            raise ValueError(
                "hloc names images by their path relative to the image folder, without spaces "
                f"(its pairs file is split on whitespace). Received: {name!r}"
            )
    return names


def relative_names(paths, image_dir) -> list[str]:
    """`paths` relative to `image_dir` (refused when one lies outside it)."""
    image_dir = os.path.abspath(os.fspath(image_dir))
    names = []
    for path in paths:
        relative = os.path.relpath(os.path.abspath(path), image_dir)
        if relative.startswith(".."):
            raise ValueError(f"{path} is not inside the hloc image folder {image_dir}.")
        names.append(relative)
    return check_names(names)


def write_pairs(path, pairs) -> str:
    """Writes `[(query name, database name), ...]` as hloc's pairs file; returns the path."""
    lines = []
    for query, database in pairs:
        query, database = check_names([query, database])
        lines.append(f"{query} {database}")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path


def write_global_descriptors(path, names, descriptors, image_sizes=None, block: int = 4096) -> str:
    """Writes (or adds to) hloc's global-descriptor file; returns the path.

    Args:
        path: the `.h5` file (created, or extended: an image already in it is replaced, as
            hloc's extractor does).
        names: relative image names.
        descriptors: `[N, D]` (a memory-mapped array is read `block` rows at a time).
        image_sizes: optional `[N, 2]` width, height of the original images.
    """

    names = check_names(names)
    if len(names) != len(descriptors):
        raise ValueError(f"{len(names)} names for {len(descriptors)} descriptors.")
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    with h5py.File(os.fspath(path), "a", libver="latest") as handle:
        for start in range(0, len(names), block):
            rows = np.asarray(descriptors[start : start + block], np.float32)
            for offset, row in enumerate(rows):
                name = names[start + offset]
                if name in handle:
                    del handle[name]
                group = handle.create_group(name)
                group.create_dataset("global_descriptor", data=row)
                if image_sizes is not None:
                    group.create_dataset("image_size", data=np.asarray(image_sizes[start + offset]))
    return os.fspath(path)


def retrieval_pairs(query_names, db_names, ids) -> list[tuple[str, str]]:
    """Pairs of each query with its retrieved database images (`ids [Q, K]`, -1 skipped)."""
    return [
        (query, db_names[db_id])
        for query, row in zip(query_names, ids, strict=True)
        for db_id in row
        if db_id >= 0
    ]
