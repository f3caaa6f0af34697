"""Recall curve and descriptor-map PNGs; t-SNE and PCA against references."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sare_tf.evaluation.embedding_2d import pca_project, tsne
from sare_tf.evaluation.plots import (
    place_labels,
    plot_descriptor_map,
    plot_query_map,
    plot_recall_curves,
)


def assert_plausible_png(path, min_bytes=8_000):
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        width, height = image.size
        assert width >= 300 and height >= 300
        pixels = np.asarray(image.convert("L"))
    # Not a blank canvas: lines, text and markers make many distinct grey levels.
    assert len(np.unique(pixels)) > 20
    import os

    assert os.path.getsize(path) >= min_bytes


def test_recall_curve_png_with_several_models(tmp_path):
    curves = {
        "NetVLAD (triplet)": np.linspace(0.5, 0.9, 25),
        "SARE-joint": np.linspace(0.6, 0.95, 25),
        "untrained": np.linspace(0.1, 0.4, 25),
    }
    path = plot_recall_curves(curves, tmp_path / "plots" / "recall.png", title="pitts30k_test")
    assert_plausible_png(path)
    with pytest.raises(ValueError, match="No recall curve"):
        plot_recall_curves({}, tmp_path / "empty.png")


def test_place_labels_keep_busiest_cells():
    positions = np.array([[1, 1], [2, 2], [3, 3], [60, 1], [61, 2], [62, 3], [63, 4], [500, 500]])
    labels = place_labels(positions, cell_m=50.0, max_places=5, min_size=3)
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0, -1]
    assert place_labels(positions, cell_m=50.0, max_places=1, min_size=3).tolist() == [-1] * 3 + [
        0
    ] * 4 + [-1]


def test_pca_projection_matches_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) @ np.diag([5.0, 2.0, 1.0, 0.5, 0.1])
    projected = pca_project(x, 2)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x, rowvar=False))
    top = eigenvectors[:, ::-1][:, :2]
    reference = (x - x.mean(0)) @ top
    np.testing.assert_allclose(np.abs(projected), np.abs(reference), atol=1e-8)
    np.testing.assert_allclose(np.var(projected, axis=0, ddof=1), eigenvalues[::-1][:2], rtol=1e-8)


def test_tsne_separates_clusters_better_than_pca_and_is_seeded():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(4, 64)) * 2.0
    labels = np.repeat(np.arange(4), 30)
    x = centres[labels] + rng.normal(size=(120, 64))
    y = tsne(x, perplexity=15.0, num_iterations=400, seed=0)
    assert y.shape == (120, 2) and np.all(np.isfinite(y))

    def neighbour_purity(points):
        distances = np.sum((points[:, None] - points[None]) ** 2, axis=-1)
        np.fill_diagonal(distances, np.inf)
        neighbours = np.argsort(distances, axis=1)[:, :5]
        return np.mean(labels[neighbours] == labels[:, None])

    assert neighbour_purity(y) > 0.95
    assert neighbour_purity(y) >= neighbour_purity(pca_project(x, 2))
    np.testing.assert_array_equal(y, tsne(x, perplexity=15.0, num_iterations=400, seed=0))


def test_query_map_pngs(tmp_path):
    rng = np.random.default_rng(3)
    places = rng.uniform(0, 1000, size=(6, 2))
    place_of_query = np.repeat(np.arange(6), 8)
    query_utm = places[place_of_query] + rng.uniform(-5, 5, size=(48, 2))
    descriptors = rng.normal(size=(6, 32))[place_of_query] + 0.3 * rng.normal(size=(48, 32))
    for method in ("tsne", "pca"):
        path = plot_query_map(
            descriptors, query_utm, tmp_path / f"{method}.png", title=method, method=method
        )
        assert_plausible_png(path)
    path = plot_descriptor_map(
        rng.normal(size=(10, 2)), np.arange(10) % 3 - 1, tmp_path / "raw.png"
    )
    assert_plausible_png(path, min_bytes=4_000)
    with pytest.raises(ValueError, match="method"):
        plot_query_map(descriptors, query_utm, tmp_path / "x.png", method="umap")


def test_thumbnails_are_drawn_at_their_embedded_positions(tmp_path):
    from PIL import Image

    from sare_tf.evaluation.plots import draw_thumbnail_map, plot_thumbnail_map

    colours = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (250, 200, 0)]
    paths = []
    for i, colour in enumerate(colours):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths.append(str(tmp_path / "broken.jpg"))
    # bottom-left, bottom-right, top-left, top-right, centre (y up, as on a plot)
    coordinates = [[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]]
    out = draw_thumbnail_map(
        coordinates, paths, tmp_path / "map.png", canvas_px=400, thumbnail_px=40
    )
    canvas = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert canvas.shape == (400, 400, 3)
    near = {
        (380, 10): colours[0],
        (380, 370): colours[1],
        (10, 10): colours[2],
        (10, 370): colours[3],
    }
    for (row, column), colour in near.items():
        np.testing.assert_allclose(canvas[row, column], colour, atol=2)
    np.testing.assert_array_equal(canvas[200, 200], [160, 160, 160])  # the unreadable one
    rng = np.random.default_rng(0)
    descriptors = np.repeat(np.eye(4), 3, axis=0) + rng.normal(0, 0.01, (12, 4))
    written = plot_thumbnail_map(descriptors, (paths[:4] * 3), tmp_path / "tsne.png", canvas_px=300)
    assert Image.open(written).size == (300, 300)
