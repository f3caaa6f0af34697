"""PNG figures of evaluation results: Recall@N curves and 2-D maps of query descriptors.

Figures are drawn with matplotlib's object API on an Agg canvas, so nothing here touches the
global pyplot state or needs a display.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from scipy.spatial import cKDTree

from sare_tf.data.images import BadImageError, read_rgb
from sare_tf.evaluation.embedding_2d import pca_project, tsne


def _new_figure(width: float, height: float):

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, out_path) -> str:
    out_path = os.fspath(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    figure.savefig(out_path, format="png", bbox_inches="tight")
    return out_path


def plot_recall_curves(
    curves: dict[str, np.ndarray],
    out_path: str | os.PathLike,
    title: str | None = None,
) -> str:
    """Draws Recall@N against N (N = 1, 2, ...) for one or several models on one plot.

    Args:
        curves: `{model name: [recall@1, recall@2, ...]}` as fractions.
        out_path: PNG file to write.
        title: plot title (e.g. the dataset name).

    Returns:
        The path written.
    """
    if not curves:
        raise ValueError("No recall curve to plot. Received: curves={}")
    figure = _new_figure(6.0, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    markers = "osd^v<>px*h"
    max_n = 1
    for position, (name, curve) in enumerate(curves.items()):
        curve = np.asarray(curve, dtype=np.float64) * 100.0
        ns = np.arange(1, len(curve) + 1)
        max_n = max(max_n, len(curve))
        axes.plot(
            ns,
            curve,
            marker=markers[position % len(markers)],
            markersize=4,
            linewidth=1.5,
            label=f"{name} (R@1 {curve[0]:.1f}%)",
        )
    axes.set_xlabel("N - number of top database candidates")
    axes.set_ylabel("Recall@N (%)")
    axes.set_xlim(0.5, max_n + 0.5)
    axes.set_xticks([1, *range(5, max_n + 1, 5)])
    low = min(float(np.min(np.asarray(c)) * 100.0) for c in curves.values())
    axes.set_ylim(max(0.0, low - 5.0), 100.0)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    if title:
        axes.set_title(title)
    return _save(figure, out_path)


def place_labels(positions, cell_m: float = 50.0, max_places: int = 15, min_size: int = 3):
    """Groups points into places and keeps the busiest ones.

    Greedy leader clustering: the point with the most neighbours within `cell_m / 2` metres
    (ties: lowest index) founds a place holding its not yet assigned neighbours; repeat. Places
    are compact (diameter <= `cell_m`) and centred on dense spots, unlike fixed grid cells that
    can cut a place in two.

    Args:
        positions: `[n, 2]` UTM positions in metres.
        cell_m: place diameter.
        max_places: how many places to keep.
        min_size: a kept place has at least this many points.

    Returns:
        `[n]` int labels 0..P-1 (busiest first), -1 for points outside the kept places.
    """

    positions = np.asarray(positions, dtype=np.float64)
    labels = np.full(len(positions), -1, dtype=np.int64)
    if len(positions) == 0:
        return labels
    tree = cKDTree(positions)
    neighbours = tree.query_ball_point(positions, r=float(cell_m) / 2.0)
    order = np.lexsort((np.arange(len(positions)), -np.array([len(n) for n in neighbours])))
    assigned = np.zeros(len(positions), dtype=bool)
    groups = []
    for leader in order:
        if assigned[leader]:
            continue
        members = np.array([m for m in neighbours[leader] if not assigned[m]], dtype=np.int64)
        assigned[members] = True
        groups.append(members)
    groups.sort(key=lambda members: (-len(members), members.min()))
    for label, members in enumerate(g for g in groups if len(g) >= min_size):
        if label >= max_places:
            break
        labels[members] = label
    return labels


def plot_descriptor_map(
    coordinates,
    labels,
    out_path: str | os.PathLike,
    title: str | None = None,
    method: str = "t-SNE",
) -> str:
    """Scatter plot of 2-D descriptor coordinates coloured by place (-1: grey background).

    Args:
        coordinates: `[n, 2]` (from `embedding_2d.tsne` or `pca_project`).
        labels: `[n]` place labels, -1 for unlabelled points.
        out_path: PNG file to write.
        title: plot title.
        method: name of the projection, for the axis labels.

    Returns:
        The path written.
    """
    coordinates = np.asarray(coordinates, dtype=np.float64)
    labels = np.asarray(labels)
    figure = _new_figure(6.0, 6.0)
    axes = figure.add_subplot(1, 1, 1)
    background = labels < 0
    if background.any():
        axes.scatter(*coordinates[background].T, s=6, c="lightgrey", label="other places")

    palette = colormaps["tab20"]
    for label in np.unique(labels[~background]):
        members = labels == label
        # Dark shades of tab20 first, then the light ones: neighbours in label stay distinct.
        shade = (2 * int(label)) % 20 + (int(label) // 10) % 2
        axes.scatter(*coordinates[members].T, s=18, color=palette(shade), label=f"place {label}")
    axes.set_xlabel(f"{method} 1")
    axes.set_ylabel(f"{method} 2")
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title)
    if len(np.unique(labels)) <= 16:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, markerscale=0.8)
    return _save(figure, out_path)


def plot_query_map(
    query_desc,
    query_utm,
    out_path: str | os.PathLike,
    title: str | None = None,
    method: str = "tsne",
    max_points: int = 800,
    cell_m: float = 50.0,
    seed: int = 0,
) -> str:
    """t-SNE (or PCA) map of query descriptors coloured by the place they were taken at.

    Queries of the busiest places (`place_labels`, `cell_m` across) are drawn in colour; up to
    `max_points` queries are used (places first, then a random sample of the rest in grey).

    Args:
        query_desc: `[Q, D]` descriptors.
        query_utm: `[Q, 2]` positions.
        out_path: PNG file.
        title: plot title.
        method: "tsne" (scikit-learn's Barnes-Hut t-SNE, `embedding_2d.tsne`) or "pca".
        max_points: cap on the plotted queries (for a readable map).
        cell_m: place size in metres.
        seed: sampling and t-SNE seed.

    Returns:
        The path written.
    """

    if method not in ("tsne", "pca"):
        raise ValueError(f"`method` must be 'tsne' or 'pca'. Received: method={method!r}")
    query_desc = np.asarray(query_desc, dtype=np.float64)
    labels = place_labels(query_utm, cell_m=cell_m)
    rng = np.random.default_rng(seed)
    labelled = np.flatnonzero(labels >= 0)
    if len(labelled) > max_points:
        labelled = np.sort(rng.choice(labelled, max_points, replace=False))
    others = np.flatnonzero(labels < 0)
    room = max(0, max_points - len(labelled))
    others = np.sort(rng.choice(others, min(room, len(others)), replace=False))
    chosen = np.concatenate([labelled, others])
    if len(chosen) < 4:
        raise ValueError(f"A descriptor map needs at least 4 queries. Received: {len(chosen)}")
    if method == "tsne":
        coordinates = tsne(
            query_desc[chosen], perplexity=min(30.0, (len(chosen) - 1) / 3), seed=seed
        )
        name = "t-SNE"
    else:
        coordinates = pca_project(query_desc[chosen], 2)
        name = "PCA"
    return plot_descriptor_map(coordinates, labels[chosen], out_path, title=title, method=name)


def draw_thumbnail_map(
    coordinates,
    image_paths,
    out_path: str | os.PathLike,
    canvas_px: int = 2400,
    thumbnail_px: int = 64,
    title: str | None = None,
) -> str:
    """Each image drawn as a thumbnail at its 2-D embedded position (the SARE paper's Figs. 9-10).

    The map is painted on one Pillow canvas, thumbnail by thumbnail (memory bounded by the
    canvas, whatever the number of images); unreadable images are drawn as grey squares.

    Args:
        coordinates: `[n, 2]` positions (e.g. `embedding_2d.tsne` of the descriptors).
        image_paths: the n image files.
        out_path: PNG file.
        canvas_px: side of the square canvas in pixels.
        thumbnail_px: longer side of each thumbnail.
        title: text written in the top-left corner.

    Returns:
        The path written.
    """

    coordinates = np.asarray(coordinates, dtype=np.float64)
    if coordinates.ndim != 2 or coordinates.shape[1] != 2 or len(coordinates) != len(image_paths):
        raise ValueError(
            "`coordinates` must be [n, 2] for n image paths. Received: "
            f"coordinates.shape={coordinates.shape}, {len(image_paths)} paths"
        )
    canvas = Image.new("RGB", (canvas_px, canvas_px), (255, 255, 255))
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    room = canvas_px - thumbnail_px
    corners = np.round((coordinates - low) / span * room).astype(int)
    for (x, y), path in zip(corners, image_paths, strict=True):
        try:
            thumbnail = Image.fromarray(read_rgb(path))
            thumbnail.thumbnail((thumbnail_px, thumbnail_px))
        except (BadImageError, OSError, ValueError):
            thumbnail = Image.new("RGB", (thumbnail_px, thumbnail_px), (160, 160, 160))
        canvas.paste(thumbnail, (int(x), int(room - y)))  # y up, as on a plot
    if title:
        ImageDraw.Draw(canvas).text((10, 10), title, fill=(0, 0, 0))
    out_path = os.fspath(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    canvas.save(out_path)
    return out_path


def plot_thumbnail_map(
    descriptors,
    image_paths,
    out_path: str | os.PathLike,
    max_images: int = 600,
    seed: int = 0,
    **kwargs,
) -> str:
    """t-SNE of `descriptors` (scikit-learn's Barnes-Hut), images drawn at their positions.

    Up to `max_images` images (a seeded random subset) are embedded and drawn.

    Returns:
        The path written.
    """

    descriptors = np.asarray(descriptors, dtype=np.float64)
    chosen = np.arange(len(descriptors))
    if len(chosen) > max_images:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, max_images, replace=False))
    if len(chosen) < 4:
        raise ValueError(f"A thumbnail map needs at least 4 images. Received: {len(chosen)}")
    coordinates = tsne(descriptors[chosen], perplexity=min(30.0, (len(chosen) - 1) / 3), seed=seed)
    return draw_thumbnail_map(coordinates, [image_paths[i] for i in chosen], out_path, **kwargs)
