"""GSV-Cities (Ali-bey et al., Neurocomputing 2022): place-labelled training data.

The released layout, as its loader reads it (amaralibey/gsv-cities `GSVCitiesDataset.py`):

    ROOT/Dataframes/<City>.csv     columns place_id, year, month, northdeg, city_id, lat, lon, panoid
    ROOT/Images/<city_id>/<city_id>_<place_id:07d>_<year:04d>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg

(`lat` / `lon` in the file name are Python's `str()` of the floats; an unnamed leading index
column, as pandas writes one, is accepted.) Each place is a few Street View images of one spot
taken in different years; the loader keeps places with at least 4 images (`min_img_per_place`).

As a sare_tf dataset: per place, the most recent image (year, month, then latitude, descending,
as GSV-Cities sorts a place) is the query and the other images are database images; labels are
`<city>:<place_id>`, and the training ground truth is by label (`train_by_labels`: positives =
the same place; never negatives = the same place or within 25 m, i.e. negatives are other places
farther than 25 m). Positions are projected to UTM per city (cities span the globe, so each city
gets its own zone) and cities are shifted 10,000 km apart.
"""

from __future__ import annotations

import csv
import glob
import os

import numpy as np

from sare_tf.data.geo_dataset import GeoDataset
from sare_tf.data.geodesy import utm_from_latlon

COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
CITY_OFFSET_M = 1e7


def _integer(text: str, where: str, field: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value != int(value):
        raise ValueError(f"{where}: {field} must be an integer. Received: {text!r}")
    return int(value)


def image_name(row: dict) -> str:
    """The GSV-Cities file name of a dataframe row (its `get_img_name`)."""
    return (
        f"{row['city_id']}_{row['place_id']:07d}_{row['year']:04d}_{row['month']:02d}_"
        f"{row['northdeg']:03d}_{row['lat']}_{row['lon']}_{row['panoid']}.jpg"
    )


def read_city_dataframe(path: str) -> list[dict]:
    """Rows of one `Dataframes/<City>.csv`, every field checked (file, line and field named)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path}: empty file (expected the header {list(COLUMNS)}).")
    header = [cell.strip() for cell in rows[0]]
    if header and header[0] in ("", "Unnamed: 0") and header[1:] and header[1] != "":
        offset = 1
    else:
        offset = 0
    missing = [name for name in COLUMNS if name not in header[offset:]]
    if missing:
        raise ValueError(f"{path}:1: no column {missing} in the header {header}.")
    index = {name: header.index(name) for name in COLUMNS}
    parsed = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{number}"
        if len(row) < len(header):
            raise ValueError(f"{where}: {len(row)} fields, the header has {len(header)}.")
        entry = {name: row[index[name]].strip() for name in COLUMNS}
        for field in ("place_id", "year", "month", "northdeg"):
            entry[field] = _integer(entry[field], where, field)
        for field in ("lat", "lon"):
            try:
                entry[field] = float(entry[field])
            except ValueError:
                raise ValueError(f"{where}: {field} must be a number. Received: {entry[field]!r}") from None
        entry["where"] = where
        parsed.append(entry)
    return parsed


def _dataframe_paths(root: str, cities) -> list[str]:
    """The city dataframes to read: the named ones, or every `Dataframes/*.csv`."""
    frames = os.path.join(root, "Dataframes")
    if not os.path.isdir(frames):
        raise FileNotFoundError(f"No GSV-Cities Dataframes folder in {root}")
    if cities is None:
        paths = sorted(glob.glob(os.path.join(frames, "*.csv")))
    else:
        paths = [os.path.join(frames, f"{city}.csv") for city in cities]
    if not paths:
        raise ValueError(f"{frames}: no city dataframes (*.csv).")
    return paths


def _refuse_repeated_images(rows) -> None:
    seen = {}
    for row in rows:
        name = image_name(row)
        if name in seen:
            raise ValueError(f"{row['where']}: the image {name} is listed again ({seen[name]}).")
        seen[name] = row["where"]


def read_gsv_cities(
    root,
    cities=None,
    min_images_per_place: int = 4,
    image_root=None,
    pos_dist_thr: float = 25.0,
    nontriv_pos_dist_thr: float = 10.0,
) -> GeoDataset:
    """Reads GSV-Cities places as a label-trained `GeoDataset` (module docstring).

    Args:
        root: the GSV-Cities root (holding `Dataframes/` and `Images/`).
        cities: dataframe names (e.g. ["London", "Boston"]); default every `Dataframes/*.csv`.
        min_images_per_place: places with fewer images are left out (counted in the summary).
        image_root: folder the stored paths are relative to (default `root`).
        pos_dist_thr, nontriv_pos_dist_thr: radii in metres (evaluation; negatives).

    Raises:
        ValueError: malformed rows (file, line and field named), duplicate images, no places
            left.
        FileNotFoundError: no `Dataframes/` folder or a named city missing.
    """
    root = os.fspath(root)
    paths = _dataframe_paths(root, cities)
    image_root = os.fspath(image_root) if image_root else root
    images_rel = os.path.relpath(os.path.join(root, "Images"), image_root).replace(os.sep, "/")
    parts = {"query": ([], [], []), "database": ([], [], [])}
    dropped = 0
    for number, path in enumerate(paths):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"GSV-Cities dataframe not found: {path}")
        rows = read_city_dataframe(path)
        city = os.path.splitext(os.path.basename(path))[0]
        if not rows:
            continue
        _refuse_repeated_images(rows)
        metres, _ = utm_from_latlon(
            [r["lat"] for r in rows], [r["lon"] for r in rows], lambda i: rows[i]["where"]
        )
        metres[:, 0] += number * CITY_OFFSET_M
        places: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            places.setdefault(row["place_id"], []).append(i)
        for place_id, members in sorted(places.items()):
            if len(members) < min_images_per_place:
                dropped += len(members)
                continue
            members.sort(key=lambda i: (rows[i]["year"], rows[i]["month"], rows[i]["lat"]), reverse=True)
            for rank, i in enumerate(members):
                role = "query" if rank == 0 else "database"
                parts[role][0].append(f"{images_rel}/{rows[i]['city_id']}/{image_name(rows[i])}")
                parts[role][1].append(metres[i])
                parts[role][2].append(f"{city}:{place_id}")
    if not parts["query"][0]:
        raise ValueError(
            f"{root}: no place has {min_images_per_place} or more images ({dropped} images left out)."
        )
    name = "gsv_cities" + ("" if cities is None else "_" + "+".join(cities))
    dataset = GeoDataset(
        db_paths=parts["database"][0],
        db_utm=np.asarray(parts["database"][1]),
        query_paths=parts["query"][0],
        query_utm=np.asarray(parts["query"][1]),
        image_root=image_root,
        pos_dist_thr=pos_dist_thr,
        nontriv_pos_dist_thr=nontriv_pos_dist_thr,
        name=name,
        frame=f"UTM per city (from latitude/longitude), cities 10,000 km apart; {dropped} images "
        f"of places with fewer than {min_images_per_place} images left out",
        db_labels=parts["database"][2],
        query_labels=parts["query"][2],
        query_attributes={"city": [label.split(":")[0] for label in parts["query"][2]]},
        train_by_labels=True,
    )
    return dataset


def is_gsv_cities_root(path) -> bool:
    path = os.fspath(path)
    return os.path.isdir(os.path.join(path, "Dataframes")) and os.path.isdir(
        os.path.join(path, "Images")
    )
