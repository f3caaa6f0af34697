"""Ground-truth statistics of a dataset: the numbers that reveal wrong units or frames.

A dataset whose positions are in the wrong unit (degrees read as metres) or in two frames
(database and queries projected differently) still loads; what gives it away is its ground
truth: every query near the whole database, or no query near any of it. `sare-tf check-data`
prints these figures and warns on those two patterns.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def _spread(counts: np.ndarray) -> dict:
    if counts.size == 0:
        return {"min": 0, "median": 0.0, "max": 0}
    return {
        "min": int(counts.min()),
        "median": float(np.median(counts)),
        "max": int(counts.max()),
    }


def ground_truth_statistics(dataset) -> dict:
    """Counts of queries with / without positives, positives per query, database spacing.

    Returns:
        A JSON-ready dict: `queries`, `database`, `radius_m` / `train_radius_m`,
        `queries_with_positives` / `queries_without_positives` (within `pos_dist_thr`),
        `queries_with_train_positives` (within `nontriv_pos_dist_thr`), `positives_per_query`
        (min / median / max within `pos_dist_thr`), `db_spacing_m` (median distance from a
        database image to its nearest other one), `db_extent_m` (bounding-box width and
        height), `frame`, and `warnings` (list of strings).
    """
    positives = np.array([ids.size for ids in dataset.positives()], int)
    train_positives = np.array([ids.size for ids in dataset.train_positives()], int)
    db = dataset.db_utm
    spacing = None
    if len(db) > 1:
        distances, _ = cKDTree(db).query(db, k=2)
        spacing = float(np.median(distances[:, 1]))
    extent = np.ptp(db, axis=0).tolist() if len(db) else [0.0, 0.0]
    stats = {
        "queries": dataset.num_queries,
        "database": dataset.num_db,
        "radius_m": dataset.pos_dist_thr,
        "train_radius_m": dataset.nontriv_pos_dist_thr,
        "queries_with_positives": int((positives > 0).sum()),
        "queries_without_positives": int((positives == 0).sum()),
        "queries_with_train_positives": int((train_positives > 0).sum()),
        "positives_per_query": _spread(positives),
        "db_spacing_m": spacing,
        "db_extent_m": [float(v) for v in extent],
        "frame": None if dataset.frame is None else str(dataset.frame),
        "queries_by_condition": {
            name: {str(v): int(c) for v, c in zip(*np.unique(values, return_counts=True), strict=True)}
            for name, values in dataset.query_attributes.items()
        },
        "warnings": [],
    }
    if dataset.num_db > 4 and np.median(positives) >= 0.5 * dataset.num_db:
        stats["warnings"].append(
            f"the median query has {np.median(positives):g} of the {dataset.num_db} database "
            f"images within {dataset.pos_dist_thr:g} m: are the positions in metres (degrees "
            "read as metres put the whole map inside the radius)?"
        )
    if dataset.num_queries and stats["queries_with_positives"] == 0:
        stats["warnings"].append(
            f"no query has a database image within {dataset.pos_dist_thr:g} m: are the "
            "database and the queries in the same frame and unit?"
        )
    return stats


def describe_ground_truth(stats: dict) -> list[str]:
    """Human-readable lines of `ground_truth_statistics`, warnings last."""
    per_query = stats["positives_per_query"]
    spacing = stats["db_spacing_m"]
    lines = [
        f"ground truth: {stats['queries_with_positives']} of {stats['queries']} queries have a "
        f"database image within {stats['radius_m']:g} m ({stats['queries_without_positives']} "
        f"have none); {stats['queries_with_train_positives']} have one within "
        f"{stats['train_radius_m']:g} m (trainable)",
        f"positives per query within {stats['radius_m']:g} m: min {per_query['min']}, median "
        f"{per_query['median']:g}, max {per_query['max']}",
        "database: "
        + (f"median spacing {spacing:.3g} m, " if spacing is not None else "")
        + f"extent {stats['db_extent_m'][0]:.4g} m x {stats['db_extent_m'][1]:.4g} m"
        + (f", {stats['frame']}" if stats["frame"] else ""),
    ]
    for name, counts in stats.get("queries_by_condition", {}).items():
        lines.append(
            f"queries by {name}: " + ", ".join(f"{value} {count}" for value, count in counts.items())
        )
    return lines + [f"WARNING: {warning}" for warning in stats["warnings"]]
