"""The Pittsburgh / Tokyo `dbStruct` `.mat` layout: reader and writer.

A file holds one MATLAB struct named `dbStruct` with the fields

    whichSet             char         "train" | "val" | "test"
    dbImageFns           cell [N, 1]  database image names relative to the image root
    utmDb                double [2, N] easting; northing (metres)
    qImageFns            cell [M, 1]  query image names
    utmQ                 double [2, M]
    numImages            double       N
    numQueries           double       M
    posDistThr           double       25
    posDistSqThr         double       625
    nonTrivPosDistSqThr  double       100

and, in TokyoTM files, `dbTimeStamp` / `qTimeStamp`. Fields are read by name (their order differs
between Pittsburgh and TokyoTM files). MATLAB v5 / v7 files are read with `scipy.io.loadmat`;
v7.3 files are HDF5 containers that scipy cannot read and are reported as such.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import scipy.io

from sare_tf.atomic import write_bytes_atomic
from sare_tf.data.geo_dataset import GeoDataset

REQUIRED_FIELDS = (
    "whichSet",
    "dbImageFns",
    "utmDb",
    "qImageFns",
    "utmQ",
    "numImages",
    "numQueries",
    "posDistThr",
    "posDistSqThr",
    "nonTrivPosDistSqThr",
)
TIME_STAMP_FIELDS = ("dbTimeStamp", "qTimeStamp")
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file, written by sare_tf (dbStruct)".ljust(116, b" ")


def _load_mat(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dbStruct file not found: {path}")
    try:
        major, _ = scipy.io.matlab.matfile_version(path)
    except Exception as error:  # scipy raises several types for non-MAT input
        raise ValueError(f"{path} is not a MATLAB .mat file ({error}).") from error
    if major == 2:
        raise ValueError(
            f"{path} is a MATLAB v7.3 (HDF5) .mat file, which scipy.io.loadmat cannot read. "
            "Re-save it in the v7 layout, e.g. in MATLAB: `load(f); save(f, 'dbStruct', '-v7')`."
        )
    try:
        return scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except Exception as error:
        raise ValueError(f"Cannot read {path} as a MATLAB v5/v7 .mat file: {error}") from error


def _struct(contents: dict, path: str) -> np.void:
    if "dbStruct" not in contents:
        variables = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(f"{path} has no variable 'dbStruct'. Received variables: {variables}")
    struct = contents["dbStruct"]
    if not isinstance(struct, np.ndarray) or struct.dtype.names is None or struct.size != 1:
        raise ValueError(
            f"'dbStruct' in {path} must be a 1x1 MATLAB struct. "
            f"Received: dtype={getattr(struct, 'dtype', type(struct))}, "
            f"shape={getattr(struct, 'shape', None)}"
        )
    struct = struct.reshape(-1)[0]
    missing = [name for name in REQUIRED_FIELDS if name not in struct.dtype.names]
    if missing:
        raise ValueError(
            f"dbStruct in {path} is missing the field(s) {', '.join(missing)}. "
            f"Received fields: {list(struct.dtype.names)}"
        )
    return struct


def _string(value, field: str, path: str) -> str:
    array = np.asarray(value)
    if array.dtype.kind == "U":
        return "".join(str(v) for v in array.reshape(-1)).strip()
    if array.dtype == object and array.size == 1:
        return _string(array.reshape(-1)[0], field, path)
    raise ValueError(f"dbStruct field {field} in {path} must be text. Received: {array!r}")


def _strings(value, field: str, path: str) -> list[str]:
    array = np.asarray(value)
    if array.dtype.kind == "U":  # a char matrix, one name per row
        return [str(v).strip() for v in array.reshape(-1)]
    if array.dtype != object:
        raise ValueError(
            f"dbStruct field {field} in {path} must be a cell array of file names. "
            f"Received: dtype={array.dtype}, shape={array.shape}"
        )
    if array.ndim == 2 and min(array.shape) > 1:
        raise ValueError(
            f"dbStruct field {field} in {path} must be an N x 1 cell array. "
            f"Received: shape={array.shape}"
        )
    return [_string(cell, field, path) for cell in array.reshape(-1)]


def _number(value, field: str, path: str) -> float:
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        raise ValueError(
            f"dbStruct field {field} in {path} must be one number. Received: {array!r}"
        )
    return float(array.reshape(-1)[0])


def _utm(value, field: str, path: str, count: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"dbStruct field {field} in {path} must be a numeric 2 x N matrix. "
            f"Received: dtype={array.dtype}"
        )
    if array.size == 0 and count == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[0] != 2:
        raise ValueError(
            f"dbStruct field {field} in {path} must be a 2 x N matrix (easting; northing). "
            f"Received: shape={array.shape}"
        )
    return array.astype(np.float64).T


def _check_count(stored: float, actual: int, field: str, what: str, path: str) -> None:
    if stored != actual:
        raise ValueError(
            f"dbStruct in {path}: {field} says {stored:g} but {what} has {actual}. "
            "The file is inconsistent."
        )


def read_dbstruct(mat_path, image_root=None, name: str | None = None) -> GeoDataset:
    """Reads a `dbStruct` `.mat` file into a `GeoDataset`.

    Counts are recomputed from the file lists and checked against `numImages` / `numQueries`
    and the UTM matrices; `posDistSqThr` is checked against `posDistThr`.

    Args:
        mat_path: the `.mat` file.
        image_root: folder the image names are relative to; default the file's folder.
        name: dataset name; default the file name without extension.

    Returns:
        A `GeoDataset` (time stamps kept when the file has them).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a readable .mat file (e.g. v7.3 / HDF5), no `dbStruct`, a missing field
            (named), or inconsistent counts / thresholds.
    """
    path = os.fspath(mat_path)
    struct = _struct(_load_mat(path), path)
    which_set = _string(struct["whichSet"], "whichSet", path)
    db_paths = _strings(struct["dbImageFns"], "dbImageFns", path)
    query_paths = _strings(struct["qImageFns"], "qImageFns", path)
    db_utm = _utm(struct["utmDb"], "utmDb", path, len(db_paths))
    query_utm = _utm(struct["utmQ"], "utmQ", path, len(query_paths))
    num_images = _number(struct["numImages"], "numImages", path)
    num_queries = _number(struct["numQueries"], "numQueries", path)
    _check_count(num_images, len(db_paths), "numImages", "dbImageFns", path)
    _check_count(num_images, db_utm.shape[0], "numImages", "utmDb", path)
    _check_count(num_queries, len(query_paths), "numQueries", "qImageFns", path)
    _check_count(num_queries, query_utm.shape[0], "numQueries", "utmQ", path)
    if not db_paths:
        raise ValueError(f"dbStruct in {path} ({which_set!r}) has no database images.")
    if not query_paths:
        raise ValueError(f"dbStruct in {path} ({which_set!r}) has no query images.")
    pos_dist_thr = _number(struct["posDistThr"], "posDistThr", path)
    pos_dist_sq_thr = _number(struct["posDistSqThr"], "posDistSqThr", path)
    nontriv_sq = _number(struct["nonTrivPosDistSqThr"], "nonTrivPosDistSqThr", path)
    if not math.isclose(pos_dist_thr**2, pos_dist_sq_thr, rel_tol=1e-6):
        raise ValueError(
            f"dbStruct in {path}: posDistSqThr={pos_dist_sq_thr:g} is not "
            f"posDistThr^2 (posDistThr={pos_dist_thr:g})."
        )
    if nontriv_sq <= 0:
        raise ValueError(
            f"dbStruct in {path}: nonTrivPosDistSqThr must be positive. Received: {nontriv_sq:g}"
        )
    stamps = {}
    for field in TIME_STAMP_FIELDS:
        if field in struct.dtype.names:
            stamps[field] = np.asarray(struct[field]).reshape(-1)
    if image_root is None:
        image_root = os.path.dirname(os.path.abspath(path))
    try:
        return GeoDataset(
            db_paths=db_paths,
            db_utm=db_utm,
            query_paths=query_paths,
            query_utm=query_utm,
            image_root=image_root,
            pos_dist_thr=pos_dist_thr,
            nontriv_pos_dist_thr=math.sqrt(nontriv_sq),
            name=name or os.path.splitext(os.path.basename(path))[0],
            db_time_stamps=stamps.get("dbTimeStamp"),
            query_time_stamps=stamps.get("qTimeStamp"),
        )
    except ValueError as error:
        raise ValueError(f"dbStruct in {path}: {error}") from error


def _cell(strings: list[str]) -> np.ndarray:
    cell = np.empty((len(strings), 1), dtype=object)
    for i, text in enumerate(strings):
        cell[i, 0] = text
    return cell


def write_dbstruct(path, dataset: GeoDataset, which_set: str, do_compression: bool = False) -> str:
    """Writes `dataset` as a `dbStruct` `.mat` file in the Pittsburgh layout (MATLAB v5).

    The file is written under a temporary name and renamed into place.

    Args:
        path: output `.mat` path.
        dataset: the dataset; its paths are stored as given (relative to its image root).
        which_set: the `whichSet` text, e.g. "train".
        do_compression: zlib-compress the variables (the MATLAB v7 flavour of the format).

    Returns:
        `path` as a string.
    """
    path = os.fspath(path)
    fields = {"whichSet": str(which_set), "dbImageFns": _cell(dataset.db_paths)}
    fields["utmDb"] = np.asarray(dataset.db_utm, np.float64).T.reshape(2, -1)
    if dataset.db_time_stamps is not None:
        fields["dbTimeStamp"] = np.asarray(dataset.db_time_stamps).reshape(1, -1)
    fields["qImageFns"] = _cell(dataset.query_paths)
    fields["utmQ"] = np.asarray(dataset.query_utm, np.float64).T.reshape(2, -1)
    if dataset.query_time_stamps is not None:
        fields["qTimeStamp"] = np.asarray(dataset.query_time_stamps).reshape(1, -1)
    fields["numImages"] = float(dataset.num_db)
    fields["numQueries"] = float(dataset.num_queries)
    fields["posDistThr"] = float(dataset.pos_dist_thr)
    fields["posDistSqThr"] = float(dataset.pos_dist_thr) ** 2
    fields["nonTrivPosDistSqThr"] = float(dataset.nontriv_pos_dist_thr) ** 2
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    scipy.io.savemat(
        buffer, {"dbStruct": fields}, format="5", do_compression=do_compression, oned_as="row"
    )
    contents = bytearray(buffer.getvalue())
    # The 116-byte header text carries a creation time; a fixed text makes equal inputs give
    # byte-identical files (the synthetic city's determinism).
    contents[:116] = MAT_HEADER_TEXT
    write_bytes_atomic(path, bytes(contents))
    return path
