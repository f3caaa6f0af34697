"""The synthetic city written in other datasets' released layouts (MSLS, GSV-Cities), so that the
demo and the tests run those readers on real files.

The images are hard links to (or, across file systems, copies of) the city's JPEGs; only the
metadata files are new. Conditions the city does not model are set by a documented rule: every
4th query is flagged night and every 3rd sideways (MSLS), so that the per-condition tables have
something to split.
"""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import utm

from sare_tf.data.gsv_cities import image_name

MSLS_CITIES = {"train": "trondheim", "val": "cph", "test": "sf"}
GSV_CITY = "SynthCity"
UTM_ZONE = (17, "T")  # the synthetic city lies in Pittsburgh's zone


def _place_file(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.exists(target):
        os.remove(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_csv(path: str, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def _latlon(utm_positions) -> tuple[np.ndarray, np.ndarray]:

    positions = np.asarray(utm_positions, np.float64)
    return utm.to_latlon(positions[:, 0], positions[:, 1], *UTM_ZONE)


def write_msls_layout(datasets: dict, out_root) -> str:
    """Writes `{"train": GeoDataset, "val": ..., "test": ...}` as MSLS cities (module docstring).

    Returns:
        The MSLS root: `ROOT:trondheim` trains, `ROOT:cph` / `ROOT:sf` evaluate.
    """
    out_root = os.fspath(out_root)
    for split, dataset in datasets.items():
        city_dir = os.path.join(out_root, "train_val", MSLS_CITIES[split])
        for role, paths, positions in (
            ("database", dataset.db_image_paths(), dataset.db_utm),
            ("query", dataset.query_image_paths(), dataset.query_utm),
        ):
            folder = os.path.join(city_dir, role)
            lats, lons = _latlon(positions)
            seq = [["", "key", "sequence_key", "frame_number"]]
            raw = [["", "key", "lon", "lat", "ca", "captured_at", "pano"]]
            post = [["", "key", "easting", "northing", "unique_cluster", "control_panel", "night",
                     "view_direction"]]  # fmt: skip
            subtasks = [["", "key", "all", "s2w", "w2s", "o2n", "n2o", "d2n", "n2d"]]
            for i, source in enumerate(paths):
                key = f"{split}_{role}_{i:05d}"
                _place_file(source, os.path.join(folder, "images", f"{key}.jpg"))
                night = role == "query" and i % 4 == 3
                view = "Sideways" if role == "query" and i % 3 == 2 else "Forward"
                seq.append([i, key, f"{split}_{role}_sequence", i])
                raw.append([i, key, repr(float(lons[i])), repr(float(lats[i])), 0.0, 0, False])
                post.append([i, key, repr(float(positions[i, 0])), repr(float(positions[i, 1])),
                             0, False, night, view])  # fmt: skip
                subtasks.append([i, key, True, False, False, False, False, night, False])
            for name, rows in (("seq_info.csv", seq), ("raw.csv", raw),
                               ("postprocessed.csv", post), ("subtask_index.csv", subtasks)):  # fmt: skip
                _write_csv(os.path.join(folder, name), rows)
    return out_root


def write_gsv_cities_layout(dataset, out_root, place_m: float = 10.0) -> str:
    """Writes one split's images (database and queries together) as a GSV-Cities city.

    Places are the `place_m` x `place_m` cells of the images' positions (GSV-Cities' places are a
    few images of one spot); years 2010 + the image's rank in its cell, so a place's most recent
    image is well defined. The reader keeps places of at least 4 images.

    Returns:
        The GSV-Cities root.
    """

    out_root = os.fspath(out_root)
    paths = dataset.db_image_paths() + dataset.query_image_paths()
    positions = np.concatenate([dataset.db_utm, dataset.query_utm])
    cells = np.floor(positions / place_m).astype(np.int64)
    _, place_ids = np.unique(cells, axis=0, return_inverse=True)
    lats, lons = _latlon(positions)
    rows = [["place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid"]]
    seen: dict[int, int] = {}
    for i, source in enumerate(paths):
        place = int(place_ids[i])
        rank = seen.get(place, 0)
        seen[place] = rank + 1
        row = {"place_id": place, "year": 2010 + rank, "month": 1 + i % 12, "northdeg": (37 * i) % 360,
               "city_id": GSV_CITY, "lat": float(lats[i]), "lon": float(lons[i]), "panoid": f"pano{i:06d}"}  # fmt: skip
        rows.append(
            [row[k] for k in rows[0][:5]] + [repr(row["lat"]), repr(row["lon"]), row["panoid"]]
        )
        _place_file(source, os.path.join(out_root, "Images", GSV_CITY, image_name(row)))
    os.makedirs(os.path.join(out_root, "Dataframes"), exist_ok=True)
    _write_csv(os.path.join(out_root, "Dataframes", f"{GSV_CITY}.csv"), rows)
    return out_root
