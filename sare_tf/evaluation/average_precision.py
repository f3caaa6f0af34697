"""Mean average precision for Oxford 5k / Paris 6k / Holidays style benchmarks.

The standard protocol (Philbin et al., CVPR 2007, and its `compute_ap` reference program): each
query has "good" and "ok" database images (both positive) and "junk" images (neither: they are
removed from the ranking before precision is measured). Average precision is the area under the
precision-recall curve by the trapezoidal rule: with positives found at 0-based ranks r_1 < r_2
< ... of the junk-free ranking,

    AP = 1 / P * sum_i ( p(r_i - 1) + p(r_i) ) / 2,   p(r) = hits up to rank r / (r + 1),

where P is the number of positives and the precision before the first rank is 1. Positives
never retrieved add nothing. INRIA Holidays uses the same rule with the query image itself as
the only junk (it is part of the database).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re

import numpy as np

logger = logging.getLogger("sare_tf.evaluation")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def average_precision(ranked_ids, positive_ids, junk_ids=()) -> float:
    """Average precision of one ranking under the Oxford protocol.

    Args:
        ranked_ids: database ids, best first (may be truncated; -1 entries are ignored).
        positive_ids: the good and ok database ids.
        junk_ids: ids removed from the ranking before scoring.

    Returns:
        AP in [0, 1].

    Raises:
        ValueError: no positives.

    Example:
        >>> average_precision([7, 3, 5], positive_ids=[3], junk_ids=[7])
        1.0
    """
    positives = np.unique(np.asarray(positive_ids, dtype=np.int64))
    if positives.size == 0:
        raise ValueError("Average precision needs at least one positive image. Received: none")
    ranked = np.asarray(ranked_ids, dtype=np.int64).reshape(-1)
    ranked = ranked[(ranked >= 0) & ~np.isin(ranked, np.asarray(junk_ids, dtype=np.int64))]
    hit_ranks = np.flatnonzero(np.isin(ranked, positives)).astype(np.float64)
    hits_before = np.arange(hit_ranks.size, dtype=np.float64)
    precision_before = np.divide(
        hits_before, hit_ranks, out=np.ones_like(hit_ranks), where=hit_ranks > 0
    )
    precision_at = (hits_before + 1.0) / (hit_ranks + 1.0)
    return float(np.sum((precision_before + precision_at) / 2.0) / positives.size)


def mean_average_precision(ranked_ids, positives, junk=None) -> tuple[float, np.ndarray]:
    """mAP over queries.

    Args:
        ranked_ids: `[Q, K]` database ids per query, best first.
        positives: per query, the good + ok database ids.
        junk: per query, the junk ids (None: no junk).

    Returns:
        `(mAP, aps)` with `aps` the `[Q]` per-query average precisions.
    """
    ranked_ids = np.asarray(ranked_ids)
    if len(ranked_ids) != len(positives) or (junk is not None and len(junk) != len(positives)):
        raise ValueError(
            f"One ranking, one positive list and one junk list per query are needed. Received: "
            f"{len(ranked_ids)} rankings, {len(positives)} positive lists, "
            f"{None if junk is None else len(junk)} junk lists"
        )
    if len(positives) == 0:
        raise ValueError("mAP needs at least one query. Received: none")
    aps = np.array(
        [
            average_precision(ranked_ids[q], positives[q], () if junk is None else junk[q])
            for q in range(len(positives))
        ]
    )
    return float(np.mean(aps)), aps


@dataclasses.dataclass
class RetrievalBenchmark:
    """An image retrieval benchmark with good/ok/junk ground truth.

    Attributes:
        name: "oxford5k", "paris6k", "holidays", ...
        db_paths: absolute database image paths.
        query_paths: absolute query image paths.
        query_boxes: per query `(x1, y1, x2, y2)` region of interest, or None entries.
        positives: per query, the good + ok database ids (int arrays).
        junk: per query, the junk database ids.
        query_names: per query, a label.
    """

    name: str
    db_paths: list[str]
    query_paths: list[str]
    query_boxes: list
    positives: list[np.ndarray]
    junk: list[np.ndarray]
    query_names: list[str]


def _image_index(image_root: str) -> dict[str, str]:
    """Maps image file stems to paths, for every image under `image_root` (recursively)."""
    index: dict[str, str] = {}
    for folder, _, files in os.walk(image_root):
        for name in files:
            stem, extension = os.path.splitext(name)
            if extension in IMAGE_EXTENSIONS:
                index.setdefault(stem, os.path.join(folder, name))
    return dict(sorted(index.items()))


def _read_names(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.split()[0] for line in handle if line.strip()]


@dataclasses.dataclass
class OxfordParisQuery:
    """One query of an Oxford / Paris ground-truth folder.

    Attributes:
        name: the ground-truth prefix (e.g. "all_souls_1").
        image: the query image name (file stem, e.g. "all_souls_000013").
        box: `(x1, y1, x2, y2)` region of interest in pixels.
        good: names of good images.
        ok: names of ok images.
        junk: names of junk images.
    """

    name: str
    image: str
    box: tuple[float, float, float, float]
    good: list[str]
    ok: list[str]
    junk: list[str]


def read_oxford_paris_ground_truth(gt_dir: str | os.PathLike) -> list[OxfordParisQuery]:
    """Reads an Oxford 5k / Paris 6k ground-truth folder.

    The folder holds, per query `<name>` (e.g. `all_souls_1`), the files `<name>_query.txt`
    (one line: image name and box `x1 y1 x2 y2`; Oxford prefixes the name with `oxc1_`),
    `<name>_good.txt`, `<name>_ok.txt` and `<name>_junk.txt` (one image name per line).

    Args:
        gt_dir: the folder.

    Returns:
        The queries, sorted by name.

    Raises:
        FileNotFoundError: no `*_query.txt` in the folder, or a list file is missing.
        ValueError: a malformed query line.
    """
    gt_dir = os.fspath(gt_dir)
    query_files = sorted(glob.glob(os.path.join(gt_dir, "*_query.txt")))
    if not query_files:
        raise FileNotFoundError(f"No *_query.txt ground-truth files in {gt_dir!r}.")
    queries = []
    for query_file in query_files:
        name = os.path.basename(query_file)[: -len("_query.txt")]
        with open(query_file, encoding="utf-8") as handle:
            fields = handle.read().split()
        if len(fields) < 5:
            raise ValueError(
                f"{query_file!r} must hold an image name and a box x1 y1 x2 y2. "
                f"Received: {' '.join(fields)!r}"
            )
        image = re.sub(r"^oxc1_", "", fields[0])
        box = tuple(float(value) for value in fields[1:5])
        lists = {}
        for kind in ("good", "ok", "junk"):
            list_file = os.path.join(gt_dir, f"{name}_{kind}.txt")
            if not os.path.isfile(list_file):
                raise FileNotFoundError(f"Missing ground-truth file {list_file!r}.")
            lists[kind] = _read_names(list_file)
        queries.append(OxfordParisQuery(name, image, box, **lists))
    return queries


def load_oxford_paris(
    gt_dir: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    name: str | None = None,
    crop_queries: bool = True,
) -> RetrievalBenchmark:
    """An Oxford 5k / Paris 6k benchmark: every image under `image_root` is in the database.

    Args:
        gt_dir: the ground-truth folder (see `read_oxford_paris_ground_truth`).
        image_root: the image folder (searched recursively; default `gt_dir`).
        name: benchmark name (default: the ground-truth folder name).
        crop_queries: crop each query to its box (the standard protocol).

    Returns:
        A `RetrievalBenchmark`.
    """
    gt_dir = os.fspath(gt_dir)
    image_root = os.fspath(image_root) if image_root is not None else gt_dir
    queries = read_oxford_paris_ground_truth(gt_dir)
    images = _image_index(image_root)
    if not images:
        raise FileNotFoundError(f"No images under {image_root!r}.")
    ids = {stem: row for row, stem in enumerate(images)}
    missing: set[str] = set()

    def to_ids(names):
        found = [ids[n] for n in names if n in ids]
        missing.update(n for n in names if n not in ids)
        return np.array(sorted(set(found)), dtype=np.int64)

    query_paths, positives, junk = [], [], []
    for query in queries:
        if query.image not in images:
            raise FileNotFoundError(
                f"Query image {query.image!r} of {query.name!r} is not under {image_root!r}."
            )
        query_paths.append(images[query.image])
        positives.append(to_ids(query.good + query.ok))
        junk.append(to_ids(query.junk))
        if positives[-1].size == 0:
            raise ValueError(f"Query {query.name!r} has no good or ok image under {image_root!r}.")
    if missing:
        logger.warning(
            "%d ground-truth image names are not under %s and are ignored (e.g. %s).",
            len(missing),
            image_root,
            sorted(missing)[0],
        )
    return RetrievalBenchmark(
        name or os.path.basename(os.path.normpath(gt_dir)),
        list(images.values()),
        query_paths,
        [query.box if crop_queries else None for query in queries],
        positives,
        junk,
        [query.name for query in queries],
    )


def load_holidays(image_dir: str | os.PathLike, name: str = "holidays") -> RetrievalBenchmark:
    """INRIA Holidays: images `XXXXYY.jpg`; `XXXX` is the scene, `YY == 00` marks its query.

    Every image is in the database; each query's positives are the other images of its scene and
    its own image is junk (removed from its ranking), as in the benchmark's evaluation script.

    Args:
        image_dir: folder of the images (searched recursively).
        name: benchmark name.

    Returns:
        A `RetrievalBenchmark`.
    """
    image_dir = os.fspath(image_dir)
    images = {
        stem: path for stem, path in _image_index(image_dir).items() if re.fullmatch(r"\d{6}", stem)
    }
    if not images:
        raise FileNotFoundError(f"No Holidays-style images (six-digit names) under {image_dir!r}.")
    stems = list(images)
    numbers = np.array([int(stem) for stem in stems])
    scenes = numbers // 100
    query_rows = np.flatnonzero(numbers % 100 == 0)
    if query_rows.size == 0:
        raise ValueError(f"No query image (name ending in 00) under {image_dir!r}.")
    positives = [
        np.flatnonzero((scenes == scenes[q]) & (np.arange(len(stems)) != q)) for q in query_rows
    ]
    junk = [np.array([q], dtype=np.int64) for q in query_rows]
    kept = [i for i, pos in enumerate(positives) if pos.size]
    if len(kept) < len(query_rows):
        logger.warning(
            "%d Holidays queries have no other image of their scene and are skipped.",
            len(query_rows) - len(kept),
        )
    return RetrievalBenchmark(
        name,
        list(images.values()),
        [images[stems[query_rows[i]]] for i in kept],
        [None] * len(kept),
        [positives[i] for i in kept],
        [junk[i] for i in kept],
        [stems[query_rows[i]] for i in kept],
    )
