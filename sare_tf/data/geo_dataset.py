"""Geo-tagged image datasets: database and query images with UTM positions, and their ground truth.

A query is localized correctly when a retrieved database image lies within `pos_dist_thr` metres
(25 m) of it. Training positives are the database images within `nontriv_pos_dist_thr` (10 m);
negatives are the database images farther than `pos_dist_thr`. Queries without any training
positive cannot form a tuple and are excluded from training (`train_query_ids()`).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath

import numpy as np
from scipy.spatial import cKDTree


def check_relative_path(path: str, what: str = "image path") -> str:
    """Returns `path` normalised to forward slashes, rejecting paths that escape the image root.

    Args:
        path: a path relative to the image root.
        what: how the path is named in error messages.

    Returns:
        The normalised relative path.

    Raises:
        ValueError: for an empty or absolute path, or one whose `..` parts leave the root.
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"Empty {what}. Received: path={path!r}")
    unified = path.replace("\\", "/")
    if posixpath.isabs(unified) or os.path.isabs(path) or (len(unified) > 1 and unified[1] == ":"):
        raise ValueError(
            f"Absolute {what} {path!r}: paths must be relative to the image root. "
            f"Received: path={path!r}"
        )
    normalised = posixpath.normpath(unified)
    if normalised == ".." or normalised.startswith("../"):
        raise ValueError(
            f"The {what} {path!r} escapes the image root through '..'. Received: path={path!r}"
        )
    return normalised


def _as_utm(values, name: str, count: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if count == 0 and array.size == 0:
        array = array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(
            f"`{name}` must have shape [N, 2] (easting, northing in metres). "
            f"Received: {name}.shape={array.shape}"
        )
    if array.shape[0] != count:
        raise ValueError(
            f"`{name}` has {array.shape[0]} rows but there are {count} image paths. "
            f"Received: {name}.shape={array.shape}"
        )
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(array), axis=1))[0])
        raise ValueError(
            f"`{name}` has a non-finite position at row {bad}. Received: {name}[{bad}]={array[bad]}"
        )
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def _per_image(values, name: str, count: int, as_str: bool = False) -> np.ndarray | None:
    """A read-only `[count]` column of per-image values (None stays None), str when asked."""
    if values is None:
        return None
    array = np.asarray(values).reshape(-1)
    if array.shape[0] != count:
        raise ValueError(
            f"`{name}` has {array.shape[0]} entries but there are {count} images. "
            f"Received: {name}.shape={np.shape(values)}"
        )
    array = np.ascontiguousarray(array.astype(str) if as_str else array)
    array.setflags(write=False)
    return array


def _as_attributes(values, count: int) -> dict[str, np.ndarray]:
    """Per-query condition columns (`{name: [Nq] str array}`), read-only."""
    return {
        str(key): _per_image(column, f"query_attributes[{key!r}]", count, as_str=True)
        for key, column in dict(values or {}).items()
    }


def _as_labels(values, name: str, count: int) -> np.ndarray | None:
    """Place / building labels as a read-only `[N]` str array ("" = unlabelled), or None."""
    return _per_image(values, name, count, as_str=True)


@dataclasses.dataclass(eq=False)
class GeoDataset:
    """Database and query images with UTM positions, and their ground-truth neighbours.

    Treat instances as immutable: the position arrays are read-only and the ground truth is cached.

    Attributes:
        db_paths: database image paths relative to `image_root`.
        db_utm: `[Ndb, 2]` float64 easting, northing in metres.
        query_paths: query image paths relative to `image_root`.
        query_utm: `[Nq, 2]` float64.
        image_root: folder the paths are relative to.
        pos_dist_thr: a retrieval within this distance (metres) is correct; db images farther away
            are negatives (25 m in the paper).
        nontriv_pos_dist_thr: db images within this distance are training positives (10 m).
        name: a label for messages and reports (e.g. "pitts30k_train").
        db_time_stamps: optional `[Ndb]` capture times (TokyoTM `dbTimeStamp`), kept as read.
        query_time_stamps: optional `[Nq]` capture times (TokyoTM `qTimeStamp`).
        frame: how the metres were obtained when a reader projected them: a
            `sare_tf.data.geodesy.UtmFrame` for latitude / longitude input (so answers can be
            given back in degrees), a description for other frames; None when the source gave
            metres.
        db_labels, query_labels: optional `[N]` place labels (Sf-0 building IDs, GSV-Cities place
            ids; "" = unlabelled) for label ground truth: a retrieval is correct when it shares
            the query's label (`label_positives`), instead of lying within `pos_dist_thr`.
        train_by_labels: training ground truth by label (GSV-Cities: positives = the same place,
            never negatives = the same place or within `pos_dist_thr`) instead of by distance.
        query_attributes: per-query conditions (`{"night": ["day", "night", ...], ...}`, as
            MSLS gives them) for the per-condition Recall@N breakdown of `evaluate`.

    Example:
        >>> ds = GeoDataset(["a.jpg", "b.jpg"], [[0, 0], [100, 0]], ["q.jpg"], [[3, 4]])
        >>> ds.positives()[0].tolist()
        [0]
    """

    db_paths: list[str]
    db_utm: np.ndarray
    query_paths: list[str]
    query_utm: np.ndarray
    image_root: str = "."
    pos_dist_thr: float = 25.0
    nontriv_pos_dist_thr: float = 10.0
    name: str = "dataset"
    db_time_stamps: np.ndarray | None = None
    query_time_stamps: np.ndarray | None = None
    frame: object = None
    db_labels: np.ndarray | None = None
    query_labels: np.ndarray | None = None
    query_attributes: dict = dataclasses.field(default_factory=dict)
    train_by_labels: bool = False
    _positives_cache: dict = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self):
        self.db_paths = [check_relative_path(p, "database image path") for p in self.db_paths]
        self.query_paths = [check_relative_path(p, "query image path") for p in self.query_paths]
        self.db_utm = _as_utm(self.db_utm, "db_utm", len(self.db_paths))
        self.query_utm = _as_utm(self.query_utm, "query_utm", len(self.query_paths))
        self.db_time_stamps = _per_image(self.db_time_stamps, "db_time_stamps", self.num_db)
        self.query_time_stamps = _per_image(
            self.query_time_stamps, "query_time_stamps", self.num_queries
        )
        self.db_labels = _as_labels(self.db_labels, "db_labels", self.num_db)
        self.query_labels = _as_labels(self.query_labels, "query_labels", self.num_queries)
        self.query_attributes = _as_attributes(self.query_attributes, self.num_queries)
        self.train_by_labels = bool(self.train_by_labels)
        if self.train_by_labels and self.db_labels is None:
            raise ValueError("`train_by_labels` needs db_labels and query_labels.")
        if (self.db_labels is None) != (self.query_labels is None):
            raise ValueError(
                "Label ground truth needs labels on both the database and the queries. Received: "
                f"db_labels={'given' if self.db_labels is not None else None}, "
                f"query_labels={'given' if self.query_labels is not None else None}"
            )
        self.image_root = os.fspath(self.image_root)
        self.pos_dist_thr = float(self.pos_dist_thr)
        self.nontriv_pos_dist_thr = float(self.nontriv_pos_dist_thr)
        if not (np.isfinite(self.pos_dist_thr) and self.pos_dist_thr > 0):
            raise ValueError(
                f"`pos_dist_thr` must be a positive distance in metres. "
                f"Received: pos_dist_thr={self.pos_dist_thr}"
            )
        if not (0 < self.nontriv_pos_dist_thr <= self.pos_dist_thr):
            raise ValueError(
                "`nontriv_pos_dist_thr` must be positive and at most `pos_dist_thr`. "
                f"Received: nontriv_pos_dist_thr={self.nontriv_pos_dist_thr}, "
                f"pos_dist_thr={self.pos_dist_thr}"
            )

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    @property
    def num_queries(self) -> int:
        return len(self.query_paths)

    def db_image_paths(self) -> list[str]:
        """Absolute database image paths."""
        root = os.path.abspath(self.image_root)
        return [os.path.join(root, p) for p in self.db_paths]

    def query_image_paths(self) -> list[str]:
        """Absolute query image paths."""
        root = os.path.abspath(self.image_root)
        return [os.path.join(root, p) for p in self.query_paths]

    def positives(self, radius_m: float | None = None) -> list[np.ndarray]:
        """Database images within `radius_m` of each query, nearest first.

        Args:
            radius_m: search radius in metres (inclusive); default `pos_dist_thr`.

        Returns:
            One int64 array of db ids per query, sorted by distance (ties by db id).
        """
        radius = self.pos_dist_thr if radius_m is None else float(radius_m)
        if not (np.isfinite(radius) and radius >= 0):
            raise ValueError(f"`radius_m` must be a non-negative distance. Received: {radius_m}")
        if radius not in self._positives_cache:
            self._positives_cache[radius] = radius_neighbours(self.query_utm, self.db_utm, radius)
        return [ids.copy() for ids in self._positives_cache[radius]]

    @property
    def has_labels(self) -> bool:
        return self.db_labels is not None

    def label_positives(self) -> list[np.ndarray]:
        """Per query, the db ids sharing its (non-empty) label, ascending.

        Raises:
            ValueError: the dataset carries no labels.
        """
        if not self.has_labels:
            raise ValueError(f"{self.name} has no place labels (db_labels / query_labels).")
        if "labels" not in self._positives_cache:
            order = np.argsort(self.db_labels, kind="stable")
            sorted_labels = self.db_labels[order]
            starts = np.searchsorted(sorted_labels, self.query_labels, side="left")
            ends = np.searchsorted(sorted_labels, self.query_labels, side="right")
            self._positives_cache["labels"] = [
                np.sort(order[start:end]) if label else np.zeros(0, np.int64)
                for label, start, end in zip(self.query_labels, starts, ends, strict=True)
            ]
        return [ids.copy() for ids in self._positives_cache["labels"]]

    def train_positives(self) -> list[np.ndarray]:
        """Per query, db ids within `nontriv_pos_dist_thr` (10 m), nearest first; with
        `train_by_labels`, the db ids of the query's place."""
        if self.train_by_labels:
            return self.label_positives()
        return self.positives(self.nontriv_pos_dist_thr)

    def non_negatives(self) -> list[np.ndarray]:
        """Per query, db ids within `pos_dist_thr` (25 m): never used as negatives; with
        `train_by_labels`, also every image of the query's place."""
        near = self.positives(self.pos_dist_thr)
        if not self.train_by_labels:
            return near
        return [
            np.union1d(by_label, by_distance)
            for by_label, by_distance in zip(self.label_positives(), near, strict=True)
        ]

    def valid_query_mask(self) -> np.ndarray:
        """`[Nq]` bool: the query has at least one training positive."""
        return np.array([ids.size > 0 for ids in self.train_positives()], dtype=bool)

    def train_query_ids(self) -> np.ndarray:
        """Ids of the queries usable for training (with at least one training positive)."""
        return np.flatnonzero(self.valid_query_mask())

    def queries_without_positives(self) -> np.ndarray:
        """Ids of the queries without a training positive (reported, not trained on)."""
        return np.flatnonzero(~self.valid_query_mask())

    def summary(self) -> str:
        """One paragraph for logs: counts, thresholds and queries excluded from training."""
        excluded = self.queries_without_positives()
        training = (
            "the same place label"
            if self.train_by_labels
            else f"within {self.nontriv_pos_dist_thr:g} m"
        )
        text = (
            f"{self.name}: {self.num_db} database images, {self.num_queries} queries, "
            f"positives {training} (training) / within {self.pos_dist_thr:g} m (evaluation), "
            f"image root {self.image_root}"
        )
        if self.frame:
            text += f"; positions in {self.frame}"
        if excluded.size:
            shown = ", ".join(str(i) for i in excluded[:10])
            more = ", ..." if excluded.size > 10 else ""
            text += (
                f"; {excluded.size} queries have no training positive ({training}) and are "
                f"excluded from training (ids {shown}{more})"
            )
        return text

    def subset(self, query_ids=None, db_ids=None, name: str | None = None) -> GeoDataset:
        """A dataset with only the given queries and/or database images (ids in this dataset)."""
        q = np.arange(self.num_queries) if query_ids is None else np.asarray(query_ids, int)
        d = np.arange(self.num_db) if db_ids is None else np.asarray(db_ids, int)
        return GeoDataset(
            db_paths=[self.db_paths[i] for i in d],
            db_utm=self.db_utm[d],
            query_paths=[self.query_paths[i] for i in q],
            query_utm=self.query_utm[q],
            image_root=self.image_root,
            pos_dist_thr=self.pos_dist_thr,
            nontriv_pos_dist_thr=self.nontriv_pos_dist_thr,
            name=name or self.name,
            db_time_stamps=None if self.db_time_stamps is None else self.db_time_stamps[d],
            query_time_stamps=None if self.query_time_stamps is None else self.query_time_stamps[q],
            frame=self.frame,
            db_labels=None if self.db_labels is None else self.db_labels[d],
            query_labels=None if self.query_labels is None else self.query_labels[q],
            query_attributes={k: v[q] for k, v in self.query_attributes.items()},
            train_by_labels=self.train_by_labels,
        )

    @classmethod
    def from_dbstruct(cls, mat_path, image_root=None) -> GeoDataset:
        """Reads a Pittsburgh / Tokyo `dbStruct` `.mat` file (`sare_tf.data.dbstruct`).

        Args:
            mat_path: the `.mat` file.
            image_root: folder the image names are relative to; default the file's folder.
        """
        return reader("dbstruct")(mat_path, image_root)

    @classmethod
    def from_folder(cls, db_dir, query_dir, image_root=None, **kwargs) -> GeoDataset:
        """Reads `@<utm_east>@<utm_north>@...@.jpg` file names (`sare_tf.data.readers`)."""
        return reader("folder")(db_dir, query_dir, image_root=image_root, **kwargs)

    @classmethod
    def from_csv(cls, csv_path, image_root=None, **kwargs) -> GeoDataset:
        """Reads `path,utm_east,utm_north[,split]` rows (`sare_tf.data.readers`)."""
        return reader("csv")(csv_path, image_root=image_root, **kwargs)

    @classmethod
    def load(cls, path, image_root=None, **kwargs) -> GeoDataset:
        """Any dataset sare_tf reads, by its path (`sare_tf.data.loading.load_dataset`)."""
        return reader("any")(path, image_root=image_root, **kwargs)


# The readers register themselves here (`sare_tf.data` imports them), so that they can build
# GeoDatasets while GeoDataset knows them only by name: no import circle between the modules.
_READERS: dict = {}


def register_reader(name: str, function) -> None:
    """Makes `function` the reader `GeoDataset` uses for `name` ("dbstruct", "csv", ...)."""
    _READERS[name] = function


def reader(name: str):
    """The registered reader `name`."""
    if name not in _READERS:
        raise ValueError(
            f"No dataset reader {name!r} is registered (import sare_tf.data). "
            f"Registered: {sorted(_READERS)}"
        )
    return _READERS[name]


def radius_neighbours(query_xy, db_xy, radius: float) -> list[np.ndarray]:
    """Per query, ids of the db points within `radius` (inclusive), nearest first.

    All pairs come from one KD-tree range query; sorting and splitting are vectorised.

    Args:
        query_xy: `[Nq, 2]` positions.
        db_xy: `[Ndb, 2]` positions.
        radius: distance threshold.

    Returns:
        A list of `Nq` int64 arrays of db ids sorted by (distance, id).
    """
    query_xy = np.asarray(query_xy, dtype=np.float64).reshape(-1, 2)
    db_xy = np.asarray(db_xy, dtype=np.float64).reshape(-1, 2)
    num_queries = query_xy.shape[0]
    if num_queries == 0 or db_xy.shape[0] == 0:
        return [np.zeros(0, np.int64) for _ in range(num_queries)]
    # A slightly larger tree radius, then the exact test below: no pair on the boundary is lost to
    # the tree's own rounding.
    pairs = cKDTree(query_xy).sparse_distance_matrix(
        cKDTree(db_xy), max_distance=radius * (1 + 1e-9) + 1e-9, output_type="ndarray"
    )
    query_ids = pairs["i"].astype(np.int64)
    db_ids = pairs["j"].astype(np.int64)
    # Recompute distances exactly as a user would (sqrt of summed squares) for a stable order.
    distances = np.sqrt(np.sum((query_xy[query_ids] - db_xy[db_ids]) ** 2, axis=1))
    inside = distances <= radius
    query_ids, db_ids, distances = query_ids[inside], db_ids[inside], distances[inside]
    order = np.lexsort((db_ids, distances, query_ids))
    query_ids, db_ids = query_ids[order], db_ids[order]
    bounds = np.searchsorted(query_ids, np.arange(num_queries + 1))
    return [db_ids[bounds[i] : bounds[i + 1]] for i in range(num_queries)]
