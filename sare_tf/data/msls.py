"""Mapillary Street-Level Sequences (MSLS, Warburg et al., CVPR 2020) in its released layout.

The layout and schema, as the MSLS authors' code reads them (mapillary/mapillary_sls
`mapillary_sls/datasets/msls.py`, and the header checks of their scene reader):

    ROOT/train_val/<city>/{query,database}/
        images/<key>.jpg
        seq_info.csv          ,key,sequence_key,frame_number
        raw.csv               ,key,lon,lat,ca,captured_at,pano
        postprocessed.csv     ,key,easting,northing,unique_cluster,control_panel,night,view_direction
        subtask_index.csv     ,key,...,all,s2w,w2s,o2n,n2o,d2n,n2d   (True / False columns)
    ROOT/test/<city>/...       (no positions: evaluated on the MSLS server)

Each file has one row per image in the same order (the first, unnamed column is the row index);
`easting` / `northing` are UTM metres of the city's zone, `pano` marks panoramas, `night` is
True / False, `view_direction` is Forward / Sideways / Backward. Cities: train = trondheim, london,
boston, melbourne, amsterdam, helsinki, tokyo, toronto, saopaulo, moscow, zurich, paris, bangkok,
budapest, austin, berlin, ottawa, phoenix, goa, amman, nairobi, manila; val = cph, sf; test =
miami, athens, buenosaires, stockholm, bengaluru, kampala.

What this reader does, as the MSLS authors' code does: panoramas are excluded (`pano` True) from
queries and database; for `split="val"` the images are those of the `subtask` column of
`subtask_index.csv` (default "all", the MSLS val subset; the other columns select
summer-to-winter, day-to-night, ... queries); positives within 10 m train, 25 m evaluate.
**Which MSLS-val**: toolkits report two. The MSLS class with the val subtask filter gives the
authors' val subset, which is what GSV-Cities ships as `msls_val` (18,871 database images and
740 queries: 6,315 / 242 in sf, 12,556 / 498 in cph, as its ground-truth files count them);
others use every val query (11,120). This reader gives the first by default (`subtask="all"`,
the comparable figure) and every non-panorama query with `subtask=None`; the counts are printed
so a user can tell which one a number refers to. (Not verified here on the real files: no MSLS
data on this machine; the tests use files written in the schema above.)

Cities have their own UTM zones, so easting / northing of two cities may overlap: each city is
shifted by 10,000 km in easting (far beyond any radius) so that no image is a positive of
another city's query. Query conditions (city, day / night, view direction) are kept in
`GeoDataset.query_attributes` for `evaluate`'s per-condition breakdown.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from sare_tf.data.geo_dataset import GeoDataset

TRAIN_CITIES = ("trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki", "tokyo",
                "toronto", "saopaulo", "moscow", "zurich", "paris", "bangkok", "budapest", "austin",
                "berlin", "ottawa", "phoenix", "goa", "amman", "nairobi", "manila")  # fmt: skip
VAL_CITIES = ("cph", "sf")
TEST_CITIES = ("miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala")
SUBTASKS = ("all", "s2w", "w2s", "o2n", "n2o", "d2n", "n2d")
HEADERS = {
    "seq_info.csv": ["", "key", "sequence_key", "frame_number"],
    "raw.csv": ["", "key", "lon", "lat", "ca", "captured_at", "pano"],
    "postprocessed.csv": [
        "",
        "key",
        "easting",
        "northing",
        "unique_cluster",
        "control_panel",
        "night",
        "view_direction",
    ],  # fmt: skip
}
CITY_OFFSET_M = 1e7


def is_msls_root(path) -> bool:
    return os.path.isdir(os.path.join(os.fspath(path), "train_val"))


def split_msls_suffix(path: str) -> tuple[str, str | None]:
    """`"ROOT:val"` -> `("ROOT", "val")` when ROOT is an MSLS root; else `(path, None)`."""
    head, separator, tail = os.fspath(path).rpartition(":")
    if separator and tail and "/" not in tail and is_msls_root(head):
        return head, tail
    return os.fspath(path), None


def cities_of(split: str) -> tuple[str, ...]:
    """ "train" / "val" -> their cities; "cph,sf" -> those cities; "test" refused."""
    if split == "train":
        return TRAIN_CITIES
    if split == "val":
        return VAL_CITIES
    cities = tuple(city.strip() for city in split.split(",") if city.strip())
    for city in cities:
        if city in TEST_CITIES or split == "test":
            raise ValueError(
                f"MSLS test city {city!r} has no public positions (its ground truth is on the MSLS "
                "evaluation server); sare_tf evaluates train and val cities."
            )
        if city not in TRAIN_CITIES + VAL_CITIES:
            raise ValueError(
                f"Unknown MSLS city {city!r}. Expected 'train', 'val' or cities of "
                f"{TRAIN_CITIES + VAL_CITIES}."
            )
    return cities


def _read_table(
    path: str, expected: list[str] | None, needed=()
) -> tuple[list[str], list[list[str]]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MSLS file missing: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path}: empty file (expected a header row).")
    header = [cell.strip() for cell in rows[0]]
    if expected is not None and header != expected:
        raise ValueError(f"{path}:1: header {header} is not MSLS's {expected}.")
    missing = [name for name in needed if name not in header]
    if missing:
        raise ValueError(f"{path}:1: no column {missing} in the header {header}.")
    return header, rows[1:]


def _true(value: str, path: str, row: int, field: str) -> bool:
    text = value.strip()
    if text in ("True", "true", "1"):
        return True
    if text in ("False", "false", "0"):
        return False
    raise ValueError(f"{path}:{row}: {field} must be True or False. Received: {value!r}")


def _read_role(folder: str, split: str, subtask: str | None, exclude_panoramas: bool) -> dict:
    """Keys, positions, and conditions of one city's query or database folder, filtered."""
    tables = {}
    for name, expected in HEADERS.items():
        tables[name] = _read_table(os.path.join(folder, name), expected)[1]
    counts = {name: len(rows) for name, rows in tables.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{folder}: the MSLS files have different row counts: {counts}")
    keep = np.ones(counts["raw.csv"], bool)
    if split == "val" and subtask is not None:
        path = os.path.join(folder, "subtask_index.csv")
        header, rows = _read_table(path, None, needed=("key", subtask))
        if len(rows) != len(keep):
            raise ValueError(f"{path}: {len(rows)} rows, the other MSLS files {len(keep)}.")
        column = header.index(subtask)
        keep &= [_true(row[column], path, i + 2, subtask) for i, row in enumerate(rows)]
    seen = {}
    keys, positions, night, view = [], [], [], []
    post_path = os.path.join(folder, "postprocessed.csv")
    for index, (info, raw, post) in enumerate(
        zip(tables["seq_info.csv"], tables["raw.csv"], tables["postprocessed.csv"], strict=True)
    ):
        line = index + 2
        if len(info) < 4 or len(raw) < 7 or len(post) < 8:
            raise ValueError(f"{folder}: row {line} is short in one of the MSLS files.")
        key = info[1]
        if raw[1] != key or post[1] != key:
            raise ValueError(
                f"{folder}: row {line} names different images in seq_info.csv ({key!r}), raw.csv "
                f"({raw[1]!r}) and postprocessed.csv ({post[1]!r})."
            )
        if key in seen:
            raise ValueError(f"{folder}: image key {key!r} on rows {seen[key]} and {line}.")
        seen[key] = line
        panorama = _true(raw[6], os.path.join(folder, "raw.csv"), line, "pano")
        if not keep[index] or (exclude_panoramas and panorama):
            continue
        try:
            east, north = float(post[2]), float(post[3])
        except ValueError:
            raise ValueError(
                f"{post_path}:{line}: easting / northing must be numbers. Received: {post[2:4]}"
            ) from None
        if not (np.isfinite(east) and np.isfinite(north)):
            raise ValueError(f"{post_path}:{line}: non-finite easting / northing {post[2:4]}.")
        keys.append(key)
        positions.append((east, north))
        night.append("night" if _true(post[6], post_path, line, "night") else "day")
        view.append(post[7].strip().lower() or "unknown")
    return {"keys": keys, "positions": positions, "night": night, "view_direction": view}


def read_msls(
    root,
    split: str = "val",
    subtask: str | None = "all",
    exclude_panoramas: bool = True,
    image_root=None,
    pos_dist_thr: float = 25.0,
    nontriv_pos_dist_thr: float = 10.0,
) -> GeoDataset:
    """Reads MSLS cities as one `GeoDataset` (module docstring: layout, filters, MSLS-val).

    Args:
        root: the MSLS root (holding `train_val/`).
        split: "train", "val", or comma-separated city names.
        subtask: for val, the `subtask_index.csv` column selecting the images ("all": the MSLS
            val subset; None: every image).
        exclude_panoramas: leave out panoramas, as the MSLS authors do.
        image_root: folder the stored paths are relative to (default `root`).
        pos_dist_thr, nontriv_pos_dist_thr: ground-truth radii in metres.

    Raises:
        ValueError: a wrong header, mismatched rows, duplicate keys, malformed numbers (file and
            row named), a city without queries, an unknown or test city.
        FileNotFoundError: a missing city folder or file.
    """
    root = os.fspath(root)
    if subtask is not None and subtask not in SUBTASKS:
        raise ValueError(f"Unknown MSLS subtask. Expected one of {SUBTASKS}. Received: {subtask!r}")
    image_root = os.fspath(image_root) if image_root else root
    role_split = "val" if split == "val" or set(cities_of(split)) <= set(VAL_CITIES) else "train"
    parts = {"query": ([], [], []), "database": ([], [], [])}
    attributes = {"city": [], "night": [], "view_direction": []}
    for number, city in enumerate(cities_of(split)):
        city_dir = os.path.join(root, "train_val", city)
        if not os.path.isdir(city_dir):
            raise FileNotFoundError(f"MSLS city folder not found: {city_dir}")
        for role in ("query", "database"):
            folder = os.path.join(city_dir, role)
            read = _read_role(folder, role_split, subtask, exclude_panoramas)
            if not read["keys"]:
                raise ValueError(
                    f"{folder}: no {role} images left (after excluding panoramas"
                    + (
                        f" and keeping subtask {subtask!r}"
                        if role_split == "val" and subtask
                        else ""
                    )
                    + ")."
                )
            relative = os.path.relpath(os.path.join(folder, "images"), image_root).replace(
                os.sep, "/"
            )
            parts[role][0].extend(f"{relative}/{key}.jpg" for key in read["keys"])
            shifted = np.asarray(read["positions"], np.float64) + [number * CITY_OFFSET_M, 0.0]
            parts[role][1].append(shifted)
            if role == "query":
                attributes["city"] += [city] * len(read["keys"])
                attributes["night"] += read["night"]
                attributes["view_direction"] += read["view_direction"]
    name = f"msls_{split.replace(',', '+')}" + (
        f"_{subtask}" if role_split == "val" and subtask else ""
    )
    return GeoDataset(
        db_paths=parts["database"][0],
        db_utm=np.concatenate(parts["database"][1]),
        query_paths=parts["query"][0],
        query_utm=np.concatenate(parts["query"][1]),
        image_root=image_root,
        pos_dist_thr=pos_dist_thr,
        nontriv_pos_dist_thr=nontriv_pos_dist_thr,
        name=name,
        frame="UTM per city (MSLS postprocessed.csv), cities 10,000 km apart",
        query_attributes=attributes,
    )
