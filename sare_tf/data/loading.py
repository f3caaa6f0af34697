"""`load_dataset`: any dataset sare_tf reads, picked by its path.

- an MSLS root (holding `train_val/`), `ROOT:val` (default), `ROOT:train` or `ROOT:cph,sf`
  (`sare_tf.data.msls.read_msls`);
- a GSV-Cities root (holding `Dataframes/` and `Images/`), `ROOT:London,Boston` for some
  cities (`sare_tf.data.gsv_cities.read_gsv_cities`; label-trained);
- a folder of frame-aligned traversal folders (Nordland-style), `ROOT:DB,QUERY` to choose two
  (`sare_tf.data.traversals.read_traversals`; ground truth within +-2 frames);
- a folder holding `database/` (or `db/`) and `queries/` (or `query/`) image folders
  (`@<utm_east>@<utm_north>@...@.jpg` file names, `sare_tf.data.readers.read_dataset_folder`);
- a `.mat` file: a Pittsburgh / Tokyo `dbStruct` (`sare_tf.data.dbstruct.read_dbstruct`);
- a `.csv` file of `path,utm_east,utm_north[,split]` rows (`sare_tf.data.readers.read_csv`);
  `file.csv:NAME` reads set NAME of a file holding several sets.
"""

from __future__ import annotations

import os

from sare_tf.data.dbstruct import read_dbstruct
from sare_tf.data.geo_dataset import GeoDataset, register_reader
from sare_tf.data.gsv_cities import is_gsv_cities_root, read_gsv_cities
from sare_tf.data.msls import is_msls_root, read_msls, split_msls_suffix
from sare_tf.data.traversals import is_traversal_root, read_traversals, split_traversal_suffix
from sare_tf.data.readers import read_csv, read_dataset_folder, read_folder, split_set_suffix


def load_dataset(path, image_root=None, **kwargs) -> GeoDataset:
    """Reads the dataset at `path` with the reader its form calls for (module docstring).

    Args:
        path: a dataset folder, a `.mat` dbStruct file, or a `.csv` file (optionally `:SET`).
        image_root: folder the image paths are relative to (default: the reader's).
        **kwargs: reader options (e.g. `which_set=` for CSV files).

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: an unknown format, or the reader's own error (file, row and field named).
    """
    msls_root, msls_split = split_msls_suffix(os.fspath(path))
    if msls_split is not None or is_msls_root(msls_root):
        return read_msls(msls_root, split=msls_split or "val", image_root=image_root, **kwargs)
    head, separator, tail = os.fspath(path).rpartition(":")
    if separator and tail and "/" not in tail and is_gsv_cities_root(head):
        return read_gsv_cities(head, cities=tail.split(","), image_root=image_root, **kwargs)
    if is_gsv_cities_root(path):
        return read_gsv_cities(path, image_root=image_root, **kwargs)
    traversal_root, chosen = split_traversal_suffix(os.fspath(path))
    if chosen is not None and is_traversal_root(traversal_root):
        return read_traversals(traversal_root, *chosen, image_root=image_root, **kwargs)
    if os.path.isdir(path) and is_traversal_root(path):
        return read_traversals(path, image_root=image_root, **kwargs)
    path, which_set = split_set_suffix(os.fspath(path))
    if which_set is not None:
        kwargs["which_set"] = which_set
    if os.path.isdir(path):
        return read_dataset_folder(path, image_root=image_root, **kwargs)
    extension = os.path.splitext(path)[1].lower()
    if extension == ".mat":
        return read_dbstruct(path, image_root)
    if extension == ".csv":
        return read_csv(path, image_root=image_root, **kwargs)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Dataset not found: {path}")
    raise ValueError(
        "Unknown dataset format: expected a .mat dbStruct file, a .csv file or a folder. "
        f"Received: path={path!r}"
    )


def dataset_path_exists(path) -> bool:
    """Whether `path` (with an optional `:SET` / MSLS `:SPLIT` suffix) names something on disk."""
    path = os.fspath(path)
    return (
        os.path.exists(split_msls_suffix(path)[0])
        or os.path.exists(split_set_suffix(path)[0])
        or os.path.exists(path.rpartition(":")[0] or path)
    )


register_reader("any", load_dataset)
register_reader("dbstruct", read_dbstruct)
register_reader("csv", read_csv)
register_reader("folder", read_folder)
register_reader("msls", read_msls)
register_reader("gsv_cities", read_gsv_cities)
register_reader("traversals", read_traversals)
