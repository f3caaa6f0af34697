"""PNG panels in the manner of the paper's Fig. 7: why did this query match that image?

One panel per query. Each model gets one row of four images: the query, its heat map (what
in the query makes it similar to the top-1 database image), the top-1 retrieved database
image framed green when it lies within the dataset's `pos_dist_thr` (25 m) of the query and
red otherwise, and that image's heat map (what in it makes it similar to the query). With two
models (e.g. SARE and NetVLAD trained with the triplet loss) the rows sit one above the other.

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend state),
so panels can be written from any process, including `sare-tf demo`.

Reference: Liu, Li, Dai, "Deep Stochastic Attraction and Repulsion Embedding for Image Based
Localization", ICCV 2019, Fig. 7.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sare_tf.artifacts import resolve_image_size as model_image_size
from sare_tf.data.images import read_rgb, resize_image
from sare_tf.evaluation import extract_descriptors
from sare_tf.index.faiss_search import search
from sare_tf.progress import ProgressBar
from sare_tf.saliency.maps import check_method_supported, saliency_maps
from sare_tf.saliency.model_access import as_embedding_model

CORRECT_COLOR = (0, 200, 0)
WRONG_COLOR = (220, 0, 0)
HEATMAP_CMAP = "jet"
HEATMAP_ALPHA = 0.5


@dataclasses.dataclass
class PanelRow:
    """What one model retrieved for a query.

    Attributes:
        model_name: the row label.
        top1_db_id: the most similar database image.
        similarity: dot product of the query and top-1 descriptors.
        distance_m: ground distance between the query and the top-1 image.
        correct: `distance_m <= pos_dist_thr`.
    """

    model_name: str
    top1_db_id: int
    similarity: float
    distance_m: float
    correct: bool


@dataclasses.dataclass
class Panel:
    """One written PNG: the query and, per model, its top-1 retrieval."""

    query_id: int
    path: str
    rows: list[PanelRow]


@dataclasses.dataclass
class _ModelEntry:
    model: object
    name: str
    db_descriptors: np.ndarray | None
    query_descriptors: np.ndarray | None


def resolve_image_size(model, dataset, image_size=None) -> tuple[int, int]:
    """The `(height, width)` panels use: given, else the model's own
    (`sare_tf.artifacts.descriptor_model.resolve_image_size`), else the first query's native size."""

    size = model_image_size(model, image_size)
    if size is not None:
        return size
    if dataset.num_queries == 0:
        raise ValueError(f"Dataset {dataset.name!r} has no queries.")

    height, width = read_rgb(dataset.query_image_paths()[0]).shape[:2]
    return int(height), int(width)


def load_images(paths: Sequence[str], image_size) -> np.ndarray:
    """Reads image files into `[N, H, W, 3]` float32 RGB 0-255 (errors name the file)."""

    images = [
        np.asarray(resize_image(read_rgb(path, image_size), image_size), dtype="float32")
        for path in paths
    ]
    return np.stack(images)


def top1_retrievals(query_descriptors, db_descriptors) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-1 search by inner product: `(similarity [Q], db id [Q])`."""

    similarity, ids = search(query_descriptors, db_descriptors, k=1)
    return similarity[:, 0], ids[:, 0]


def write_panels(
    model,
    dataset,
    query_ids,
    out_dir,
    image_size=None,
    method: str = "gradcam++",
    layer_name: str | None = None,
    db_descriptors=None,
    query_descriptors=None,
    model_name: str = "model",
    compare_model=None,
    compare_db_descriptors=None,
    compare_query_descriptors=None,
    compare_name: str = "compare",
    batch_size: int = 8,
    progress: bool = True,
    dpi: int = 100,
    **saliency_kwargs,
) -> list[Panel]:
    """Writes one PNG panel per query: query, heat map, top-1 database image, its heat map.

    The query's heat map explains its similarity to the top-1 database descriptor, and the
    database image's heat map its similarity to the query descriptor (see `saliency_maps`).
    The top-1 image is framed green when it is within `dataset.pos_dist_thr` metres of the
    query (a correct localization), red otherwise.

    Args:
        model: embedding model (or tuple model, `.keras`-loaded model, SavedModel-backed
            model from `sare_tf.saliency.load_model`).
        dataset: a `sare_tf.data.GeoDataset`.
        query_ids: ids of the queries to draw.
        out_dir: folder for `query_<id>.png` and `panels.json` (created).
        image_size: `(height, width)` every image is resized to; None: the model's fixed input
            size, else the first query's size. Precomputed descriptors should come from
            images of this size.
        method: saliency method, one of `sare_tf.saliency.METHODS`.
        layer_name: target layer for the CAM methods (default: the layer feeding NetVLAD).
        db_descriptors: `[Ndb, D]` descriptors of the whole database; computed when None.
        query_descriptors: `[Nq, D]` descriptors of all queries (indexed by query id);
            computed for the drawn queries when None.
        model_name: row label.
        compare_model: optional second model drawn in a second row (e.g. NetVLAD beside SARE).
        compare_db_descriptors: as `db_descriptors`, for `compare_model`.
        compare_query_descriptors: as `query_descriptors`, for `compare_model`.
        compare_name: second row label.
        batch_size: images per descriptor / saliency batch.
        progress: show progress bars.
        dpi: resolution of the PNG files.
        **saliency_kwargs: passed to `saliency_maps` (e.g. `smooth_samples`).

    Returns:
        One `Panel` per query, in the order of `query_ids`.
    """
    query_ids = _check_query_ids(query_ids, dataset)
    entries = [_ModelEntry(model, model_name, db_descriptors, query_descriptors)]
    if compare_model is not None:
        entries.append(
            _ModelEntry(
                compare_model, compare_name, compare_db_descriptors, compare_query_descriptors
            )
        )
    for entry in entries:
        # Before any descriptor is computed: a SavedModel cannot do the CAM methods.
        check_method_supported(entry.model, method)
    image_size = resolve_image_size(model, dataset, image_size)
    os.makedirs(out_dir, exist_ok=True)

    query_images = load_images([dataset.query_image_paths()[q] for q in query_ids], image_size)
    queries = _Queries(dataset, query_ids, query_images, image_size, dataset.db_image_paths())
    options = dict(method=method, layer_name=layer_name, batch_size=batch_size, **saliency_kwargs)
    rows_per_model = [_explain_model(entry, queries, options, progress) for entry in entries]

    panels = []
    bar = ProgressBar(len(query_ids), "panel", enabled=progress)
    for position, query_id in enumerate(query_ids):
        path = os.path.join(os.fspath(out_dir), f"query_{query_id:05d}.png")
        drawn = [rows[position] for rows in rows_per_model]
        _draw_panel(path, query_id, query_images[position], drawn, dataset, method, dpi)
        panels.append(Panel(query_id, path, [row for row, *_ in drawn]))
        bar.update(position + 1)
    _write_summary(out_dir, panels, dataset, method, image_size)
    return panels


def _check_query_ids(query_ids, dataset) -> list[int]:
    ids = np.asarray(query_ids).reshape(-1)
    if ids.size == 0:
        raise ValueError("`query_ids` is empty: choose at least one query.")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"`query_ids` must be integers. Received: {query_ids!r}")
    bad = ids[(ids < 0) | (ids >= dataset.num_queries)]
    if bad.size:
        raise ValueError(
            f"Query ids out of range for {dataset.name!r} ({dataset.num_queries} queries). "
            f"Received: {bad.tolist()}"
        )
    return [int(i) for i in ids]


def _descriptors(model, images: np.ndarray, batch_size: int) -> np.ndarray:

    embedding = as_embedding_model(model)
    outputs = [
        np.asarray(embedding(images[start : start + batch_size], training=False), dtype="float32")
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs, axis=0)


@dataclasses.dataclass(frozen=True)
class _Queries:
    """The queries drawn: their dataset, ids, images (at `image_size`), and the database paths."""

    dataset: object
    query_ids: list
    query_images: np.ndarray
    image_size: tuple | None
    db_paths: list


def _explain_model(entry, queries: _Queries, options: dict, progress: bool):
    """Top-1 retrieval and both heat maps for every query, for one model.

    `options`: `saliency_maps`'s settings (method, layer, batch size, ...).
    """
    dataset, query_ids, query_images = queries.dataset, queries.query_ids, queries.query_images
    image_size = queries.image_size
    batch_size = options["batch_size"]
    db_paths = queries.db_paths
    model = as_embedding_model(entry.model)
    if entry.query_descriptors is not None:
        all_queries = _as_matrix(entry.query_descriptors, dataset.num_queries, "query_descriptors")
        query_desc = all_queries[query_ids]
    else:
        query_desc = _descriptors(model, query_images, batch_size)
    if entry.db_descriptors is not None:
        db_desc = _as_matrix(entry.db_descriptors, dataset.num_db, "db_descriptors")
    else:
        db_desc = extract_descriptors(
            model, db_paths, image_size=image_size, batch_size=batch_size, progress=progress
        )
    if db_desc.shape[1] != query_desc.shape[1]:
        raise ValueError(
            f"Query and database descriptors of {entry.name!r} differ in size. Received: "
            f"{query_desc.shape[1]} and {db_desc.shape[1]}"
        )
    similarity, top1 = top1_retrievals(query_desc, db_desc)
    db_images = load_images([db_paths[i] for i in top1], image_size)
    query_maps = saliency_maps(model, query_images, db_desc[top1], **options)
    db_maps = saliency_maps(model, db_images, query_desc, **options)
    rows = []
    for position, query_id in enumerate(query_ids):
        db_id = int(top1[position])
        distance = float(np.linalg.norm(dataset.query_utm[query_id] - dataset.db_utm[db_id]))
        row = PanelRow(
            entry.name,
            db_id,
            float(similarity[position]),
            distance,
            bool(distance <= dataset.pos_dist_thr),
        )
        rows.append((row, query_maps[position], db_images[position], db_maps[position]))
    return rows


def _as_matrix(descriptors, count: int, name: str) -> np.ndarray:
    array = np.asarray(descriptors, dtype="float32")
    if array.ndim != 2 or array.shape[0] != count:
        raise ValueError(f"`{name}` must be [{count}, D]. Received: shape={array.shape}")
    return array


def overlay(image: np.ndarray, heatmap: np.ndarray, cmap: str = HEATMAP_CMAP, alpha=HEATMAP_ALPHA):
    """Blends a `[H, W]` heat map in [0, 1] over a grey version of a `[H, W, 3]` 0-255 image.

    The image is shown in grey under the colour map so that the map's colours are not mixed
    up with the scene's. Returns uint8 RGB.
    """

    image = np.asarray(image, dtype="float64")
    grey = (image @ np.array([0.299, 0.587, 0.114]))[..., None]
    colored = colormaps[cmap](np.clip(heatmap, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * grey + alpha * colored
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def framed(image: np.ndarray, color, width: int | None = None) -> np.ndarray:
    """The image inside a solid `color` frame `width` pixels wide (added around it); uint8 RGB."""
    pixels = np.clip(np.round(np.asarray(image, dtype="float64")), 0, 255).astype(np.uint8)
    if width is None:
        width = max(2, round(0.06 * min(pixels.shape[:2])))
    height, image_width = pixels.shape[:2]
    result = np.empty((height + 2 * width, image_width + 2 * width, 3), np.uint8)
    result[...] = color
    result[width : width + height, width : width + image_width] = pixels
    return result


def _draw_panel(path, query_id, query_image, drawn, dataset, method, dpi):

    height, width = query_image.shape[:2]
    cell = 2.6
    figure = Figure(figsize=(4 * cell, len(drawn) * cell * height / width + 0.9), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(drawn), 4, squeeze=False)
    for row_axes, (row, query_map, db_image, db_map) in zip(axes, drawn, strict=True):
        verdict = "correct" if row.correct else "wrong"
        color = CORRECT_COLOR if row.correct else WRONG_COLOR
        cells = (
            (query_image.astype(np.uint8), f"{row.model_name}: query {query_id}"),
            (overlay(query_image, query_map), f"{method}: query vs top-1"),
            (
                framed(db_image, color),
                f"top-1 db {row.top1_db_id}: {row.distance_m:.1f} m, {verdict}",
            ),
            (overlay(db_image, db_map), f"{method}: top-1 vs query (s={row.similarity:.3f})"),
        )
        for ax, (pixels, title) in zip(row_axes, cells, strict=True):
            ax.imshow(pixels, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    figure.suptitle(
        f"{dataset.name}: query {query_id} - green frame: top-1 within "
        f"{dataset.pos_dist_thr:g} m, red: farther",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)


def _write_summary(out_dir, panels: list[Panel], dataset, method: str, image_size) -> None:
    summary = {
        "dataset": dataset.name,
        "method": method,
        "image_size": list(image_size),
        "pos_dist_thr_m": dataset.pos_dist_thr,
        "panels": [
            {
                "query_id": panel.query_id,
                "path": os.path.basename(panel.path),
                "rows": [dataclasses.asdict(row) for row in panel.rows],
            }
            for panel in panels
        ],
    }
    with open(os.path.join(os.fspath(out_dir), "panels.json"), "w", encoding="utf-8") as file:
        json.dump(summary, file, indent=2)
