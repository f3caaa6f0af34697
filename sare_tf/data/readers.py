"""Dataset readers besides dbStruct: image folders with positions in file names, and CSV files.

Folder layout (as the community benchmark datasets use): one folder of database images and one
of queries, each file named `@<utm_east>@<utm_north>@<anything>@.jpg`, e.g.
`@0543256.96@4178906.70@10@S@037.75643@-122.50771@@@@@@pano@.jpg` (the fields after the second
are ignored). Subfolders are searched too. A folder of phone photos without such names takes its
positions from the photos' EXIF GPS tags (latitude / longitude, projected into one UTM zone).

CSV layout: rows `path,utm_east,utm_north[,split]`, or with a header row naming the columns in
any order: `path` (or image, file, filename), `utm_east` / `utm_north` (or easting / northing) in
metres, or `lat` / `lon` (or latitude / longitude, lng) in WGS84 degrees, projected into one UTM
zone per dataset (`sare_tf.data.geodesy`, the zone recorded in `GeoDataset.frame`), and optional
`split` (or set, role), and optional `label` (or building_id, place_id): a place label for label
ground truth (Sf-0's building IDs; a query is right when a retrieved image shares its label;
an empty cell is unlabelled). An unknown column name is refused, and so is a header-less file whose
"metres" look like degrees (every value within +-180 and the whole database inside the 25 m
radius). `split` says whether a row is a database image or a query: `db` /
`database` or `query` / `queries`, optionally prefixed by a set name (`train_db`,
`test/query`, `val:queries`) so that one file can hold several sets. A file holding several
sets must be read one set at a time (`which_set=`, or `file.csv:NAME` wherever a dataset path is
taken, e.g. `sare-tf train --dataset all.csv:train`): reading it whole is refused, naming the
sets, since merging them would train on the test section. Without a split column, pass the
queries in a second CSV (`query_csv=`).
"""

from __future__ import annotations

import csv
import os
import re

import numpy as np

from sare_tf.data.geo_dataset import GeoDataset
from sare_tf.data.geodesy import utm_from_latlon
from sare_tf.data.photo_gps import exif_latlon

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DB_FOLDER_NAMES = ("database", "db")
QUERY_FOLDER_NAMES = ("queries", "query")
_DB_ROLES = {"db", "database"}
_QUERY_ROLES = {"q", "query", "queries"}


def utm_from_file_name(path: str) -> tuple[float, float]:
    """`(easting, northing)` from a `@<utm_east>@<utm_north>@...` file name.

    Raises:
        ValueError: the name does not carry two numbers in that place (the message names it).
    """
    fields = os.path.basename(path).split("@")
    try:
        if len(fields) < 4 or fields[0] != "":
            raise ValueError
        east, north = float(fields[1]), float(fields[2])
    except ValueError:
        raise ValueError(
            f"Cannot read a UTM position from the file name {path!r}: expected "
            "'@<utm_east>@<utm_north>@...@.jpg'."
        ) from None
    if not (np.isfinite(east) and np.isfinite(north)):
        raise ValueError(f"Non-finite UTM position in the file name {path!r}.")
    return east, north


def _image_files(folder: str) -> list[str]:
    found = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        found += [
            os.path.join(directory, name)
            for name in sorted(names)
            if name.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return found


def _relative_to_root(path: str, root: str) -> str:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if relative.startswith(".."):
        raise ValueError(f"{path!r} is outside the image root {root!r}.")
    return relative.replace(os.sep, "/")


def read_folder(
    db_dir,
    query_dir,
    image_root=None,
    name: str | None = None,
    pos_dist_thr: float = 25.0,
    nontriv_pos_dist_thr: float = 10.0,
) -> GeoDataset:
    """Reads a database folder and a query folder of `@east@north@...@` image files, or of
    photos with EXIF GPS positions (phone photos; projected into one UTM zone, `frame` says which).

    Args:
        db_dir: folder of database images (searched recursively, sorted by path).
        query_dir: folder of query images.
        image_root: folder the stored paths are relative to; default the folders' common parent.
        name: dataset name; default the query folder's parent name.
        pos_dist_thr, nontriv_pos_dist_thr: ground-truth radii in metres.

    Returns:
        The `GeoDataset`.
    """
    db_dir, query_dir = os.fspath(db_dir), os.fspath(query_dir)
    for folder in (db_dir, query_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"Image folder not found: {folder}")
    if image_root is None:
        image_root = os.path.commonpath([os.path.abspath(db_dir), os.path.abspath(query_dir)])
    image_root = os.fspath(image_root)
    files = {}
    for role, folder in (("database", db_dir), ("query", query_dir)):
        files[role] = _image_files(folder)
        if not files[role]:
            raise ValueError(
                f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in the {role} folder {folder}"
            )
    positions, frame = _positions_of(files["database"] + files["query"])
    count = len(files["database"])
    return GeoDataset(
        db_paths=[_relative_to_root(f, image_root) for f in files["database"]],
        db_utm=positions[:count],
        query_paths=[_relative_to_root(f, image_root) for f in files["query"]],
        query_utm=positions[count:],
        image_root=image_root,
        pos_dist_thr=pos_dist_thr,
        nontriv_pos_dist_thr=nontriv_pos_dist_thr,
        name=name or os.path.basename(os.path.dirname(os.path.abspath(query_dir))) or "folder",
        frame=frame,
    )


def _utm_or_none(path: str):
    try:
        return utm_from_file_name(path)
    except ValueError:
        return None


def _positions_of(files: list[str]) -> tuple[np.ndarray, str | None]:
    """UTM from `@east@north@` names, or else from the photos' EXIF GPS (one zone for all)."""
    from_names = [_utm_or_none(f) for f in files]
    named = sum(position is not None for position in from_names)
    if named == len(files):
        return np.array(from_names, np.float64), None
    if named:
        unnamed = [f for f, position in zip(files, from_names, strict=True) if position is None]
        raise ValueError(
            f"{named} images carry '@<utm_east>@<utm_north>@' names and {len(unnamed)} do not "
            f"(first: {unnamed[0]}); one dataset takes its positions from one source."
        )
    degrees = [exif_latlon(f) for f in files]
    missing = [f for f, position in zip(files, degrees, strict=True) if position is None]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(files)} images have neither an '@<utm_east>@<utm_north>@' "
            f"name nor an EXIF GPS position (first: {', '.join(missing[:3])}). Give their "
            "positions in a CSV (path,lat,lon,split) or leave them out."
        )
    degrees = np.array(degrees, np.float64)
    return utm_from_latlon(degrees[:, 0], degrees[:, 1], files.__getitem__)


def read_dataset_folder(path, image_root=None, **kwargs) -> GeoDataset:
    """Reads a folder holding `database/` (or `db/`) and `queries/` (or `query/`) subfolders."""
    path = os.fspath(path)
    found = {}
    for role, names in (("database", DB_FOLDER_NAMES), ("queries", QUERY_FOLDER_NAMES)):
        for folder_name in names:
            if os.path.isdir(os.path.join(path, folder_name)):
                found[role] = os.path.join(path, folder_name)
                break
    if len(found) != 2:
        raise ValueError(
            f"{path} must contain a database folder ({' or '.join(DB_FOLDER_NAMES)}) and a "
            f"query folder ({' or '.join(QUERY_FOLDER_NAMES)}). Received entries: "
            f"{sorted(os.listdir(path))[:20]}"
        )
    kwargs.setdefault("name", os.path.basename(os.path.abspath(path)))
    return read_folder(found["database"], found["queries"], image_root=image_root or path, **kwargs)


def _parse_split(value: str, where: str) -> tuple[str | None, str]:
    """`"train_db"` -> `("train", "db")`; `"query"` -> `(None, "query")`."""
    text = value.strip().lower()
    match = re.fullmatch(r"(?:(.+?)[_\-/:])?(db|database|q|query|queries)", text)
    if not match:
        raise ValueError(
            f"{where}: split {value!r} is neither a database nor a query marker "
            "(db, database, query, queries; optionally prefixed like train_db)."
        )
    role = "db" if match.group(2) in _DB_ROLES else "query"
    return match.group(1), role


COLUMN_ALIASES = {
    "path": ("path", "image", "image_path", "file", "filename", "file_name"),
    "utm_east": ("utm_east", "easting", "east", "utm_easting"),
    "utm_north": ("utm_north", "northing", "north", "utm_northing"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "split": ("split", "set", "role"),
    "label": ("label", "building_id", "place_id", "landmark_id"),
}
_CANONICAL = {alias: name for name, aliases in COLUMN_ALIASES.items() for alias in aliases}
HEADERLESS_COLUMNS = ("path", "utm_east", "utm_north", "split")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _columns_of(csv_path: str, header: list[str]) -> dict[str, int]:
    """`{canonical column: index}` from a header row; unknown or duplicate names refused."""
    columns: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = _CANONICAL.get(cell.strip().lower())
        if name is None:
            accepted = "; ".join(f"{k}: {', '.join(v)}" for k, v in COLUMN_ALIASES.items())
            raise ValueError(
                f"{csv_path}:1: unknown column {cell!r} in the header {header}. Columns sare_tf "
                f"reads (any order): {accepted}."
            )
        if name in columns:
            raise ValueError(f"{csv_path}:1: two columns mean {name!r}: {header}.")
        columns[name] = index
    has_utm = {"utm_east", "utm_north"} <= columns.keys()
    has_latlon = {"lat", "lon"} <= columns.keys()
    if "path" not in columns or has_utm == has_latlon:
        raise ValueError(
            f"{csv_path}:1: the header {header} needs a path column and either utm_east and "
            "utm_north (metres) or lat and lon (degrees), not both."
        )
    return columns


def _read_rows(csv_path: str) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The column map (from the header row, or the header-less layout) and the data rows."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = [
            (number, [cell.strip() for cell in row])
            for number, row in enumerate(csv.reader(handle), start=1)
            if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")
        ]
    if rows and not all(_is_number(cell) for cell in rows[0][1][1:3]):
        return _columns_of(csv_path, rows[0][1]), rows[1:]
    return {name: i for i, name in enumerate(HEADERLESS_COLUMNS)}, rows


def _row_values(
    csv_path: str, number: int, row: list[str], columns: dict[str, int]
) -> tuple[str, float, float]:
    """`(path, a, b)`: easting / northing, or latitude / longitude, as the columns say."""
    where = f"{csv_path}:{number}"
    fields = ("utm_east", "utm_north") if "utm_east" in columns else ("lat", "lon")
    needed = max(columns[name] for name in ("path", *fields)) + 1
    if len(row) < needed:
        layout = ",".join(sorted(columns, key=columns.get))
        raise ValueError(f"{where}: expected {layout}. Received: {row}")
    values = []
    for field in fields:
        text = row[columns[field]]
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{where}: {field} must be a number. Received: {text!r}") from None
        if not np.isfinite(value):
            raise ValueError(f"{where}: {field} is not finite. Received: {text!r}")
        values.append(value)
    return row[columns["path"]], values[0], values[1]


def _refuse_degrees_as_metres(csv_path: str, db_positions, pos_dist_thr: float) -> None:
    positions = np.asarray(db_positions, np.float64)
    looks_like_degrees = np.all(np.abs(positions[:, 0]) <= 180) and np.all(
        np.abs(positions[:, 1]) <= 180
    )
    extent = float(np.max(np.ptp(positions, axis=0))) if len(positions) else 0.0
    if len(positions) > 1 and looks_like_degrees and extent < pos_dist_thr:
        raise ValueError(
            f"{csv_path}: the positions look like latitude/longitude degrees read as UTM metres "
            f"(every value within +-180, the whole database within {extent:.3g} 'm', so every "
            f"database image would be a positive of every query). Add a header row naming the "
            "columns, e.g. path,lat,lon,split (degrees are then projected to UTM), or give "
            "metres."
        )


def _check_set_choice(csv_path: str, set_names: set[str], which_set: str | None) -> None:
    """A file of several sets needs a choice; a chosen set must exist."""
    found = ", ".join(sorted(set_names)) or "none (no prefixed split labels)"
    if which_set is None and len(set_names) > 1:
        raise ValueError(
            f"{csv_path} holds several sets ({found}); reading them together would merge them "
            f"(e.g. train on the test section). Choose one: {csv_path}:NAME on the command line, "
            "or which_set='NAME'."
        )
    if which_set is not None and which_set.lower() not in set_names:
        raise ValueError(
            f"{csv_path} has no set {which_set!r}. Sets in the file: {found}. "
            f"Received: which_set={which_set!r}"
        )


def split_set_suffix(path: str) -> tuple[str, str | None]:
    """`"all.csv:test"` -> `("all.csv", "test")`; any other path -> `(path, None)`.

    Only a `:NAME` after a `.csv` name counts, and only when no file has the whole name.
    """
    path = os.fspath(path)
    head, separator, tail = path.rpartition(":")
    if (
        separator
        and head.lower().endswith(".csv")
        and tail
        and "/" not in tail
        and not os.path.exists(path)
    ):
        return head, tail
    return path, None


def _row_role(where: str, row, columns, fixed_role, which_set, set_names: set) -> str | None:
    """ "db" or "query" for a CSV row (None: a row of another set than `which_set`); adds the
    row's set name to `set_names`."""
    split = row[columns["split"]] if columns.get("split", len(row)) < len(row) else ""
    if fixed_role is not None:
        return fixed_role
    if not split:
        raise ValueError(
            f"{where}: no split column; add a column 'split' saying 'db' or 'query' on every "
            "row (e.g. path,lat,lon,split)."
        )
    set_name, role = _parse_split(split, where)
    if set_name is not None:
        set_names.add(set_name)
        if which_set is not None and set_name != which_set.lower():
            return None
    return role


def _csv_positions(csv_path, parts: dict, latlon: bool, pos_dist_thr: float):
    """`({"db": [N, 2], "query": [M, 2]} in metres, frame)` of the rows read."""
    if not latlon:
        _refuse_degrees_as_metres(csv_path, parts["db"][1], pos_dist_thr)
        return {role: np.asarray(parts[role][1], np.float64) for role in parts}, None
    degrees = np.asarray(parts["db"][1] + parts["query"][1], np.float64)
    row_names = parts["db"][2] + parts["query"][2]
    metres, frame = utm_from_latlon(degrees[:, 0], degrees[:, 1], row_names.__getitem__)
    count = len(parts["db"][0])
    return {"db": metres[:count], "query": metres[count:]}, frame


def read_csv(
    csv_path,
    image_root=None,
    query_csv=None,
    which_set: str | None = None,
    name: str | None = None,
    pos_dist_thr: float = 25.0,
    nontriv_pos_dist_thr: float = 10.0,
) -> GeoDataset:
    """Reads `path,utm_east,utm_north[,split]` rows, or named columns (metres or degrees).

    Args:
        csv_path: the CSV file (database and queries told apart by the split column), or the
            database rows when `query_csv` is given.
        image_root: folder the paths are relative to; default the CSV file's folder.
        query_csv: optional CSV file of the queries.
        which_set: keep only rows whose split prefix is this set (unprefixed rows are kept).
        name: dataset name; default the file name (plus `_<which_set>`).
        pos_dist_thr, nontriv_pos_dist_thr: ground-truth radii in metres.

    Returns:
        The `GeoDataset` (path safety checked: no absolute paths, no `..` out of the root).
    """
    csv_path = os.fspath(csv_path)
    for path in (csv_path, query_csv):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"CSV file not found: {path}")
    parts = {"db": ([], [], [], []), "query": ([], [], [], [])}  # paths, positions, rows, labels
    set_names: set[str] = set()
    kinds, labelled = set(), set()
    sources = [(csv_path, None)] if query_csv is None else [(csv_path, "db"), (query_csv, "query")]
    for source, fixed_role in sources:
        columns, rows = _read_rows(source)
        kinds.add("latlon" if "lat" in columns else "utm")
        labelled.add("label" in columns)
        for number, row in rows:
            path, first, second = _row_values(source, number, row, columns)
            role = _row_role(f"{source}:{number}", row, columns, fixed_role, which_set, set_names)
            if role is None:  # another set's row
                continue
            parts[role][0].append(path)
            parts[role][1].append((first, second))
            parts[role][2].append(f"{source}:{number}")
            label_column = columns.get("label")
            parts[role][3].append(
                row[label_column] if label_column is not None and label_column < len(row) else ""
            )
    if len(labelled) > 1:
        raise ValueError(f"{csv_path} and {query_csv}: only one of them has a label column.")
    if len(kinds) > 1:
        raise ValueError(
            f"{csv_path} and {query_csv}: one gives metres, the other degrees; give both the same."
        )
    _check_set_choice(csv_path, set_names, which_set)
    for role, label in (("db", "database"), ("query", "query")):
        if not parts[role][0]:
            scope = f" for set {which_set!r}" if which_set else ""
            raise ValueError(f"{csv_path}: no {label} rows{scope}.")
    positions, frame = _csv_positions(csv_path, parts, kinds == {"latlon"}, pos_dist_thr)
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    try:
        return GeoDataset(
            db_paths=parts["db"][0],
            db_utm=positions["db"],
            query_paths=parts["query"][0],
            query_utm=positions["query"],
            image_root=os.fspath(image_root)
            if image_root
            else os.path.dirname(os.path.abspath(csv_path)),
            pos_dist_thr=pos_dist_thr,
            nontriv_pos_dist_thr=nontriv_pos_dist_thr,
            name=name or (f"{stem}_{which_set}" if which_set else stem),
            frame=frame,
            db_labels=parts["db"][3] if labelled == {True} else None,
            query_labels=parts["query"][3] if labelled == {True} else None,
        )
    except ValueError as error:
        raise ValueError(f"{csv_path}: {error}") from error
