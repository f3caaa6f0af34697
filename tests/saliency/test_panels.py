"""PNG panels on a hand-made street: retrieval, 25 m verdict, frame colours, two models."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from sare_tf.data import GeoDataset
from sare_tf.models import build_embedding_model, feature_model
from sare_tf.saliency import write_panels
from sare_tf.saliency.panels import CORRECT_COLOR, WRONG_COLOR, framed, overlay


@pytest.fixture(scope="module")
def street(tmp_path_factory, make_images):
    """3 queries; db 0-2 are noisy copies of them at 5 m, 20 m and 60 m; db 3-5 are elsewhere."""
    root = tmp_path_factory.mktemp("street")
    (root / "queries").mkdir()
    (root / "db").mkdir()
    queries = make_images(3, 48, 64, seed=40)
    noise = np.random.default_rng(0).normal(0, 4, queries.shape)
    database = np.concatenate([queries + noise, make_images(3, 48, 64, seed=41)])
    for folder, images in (("queries", queries), ("db", database)):
        for i, image in enumerate(images):
            pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i}.jpg", quality=95)
    return GeoDataset(
        db_paths=[f"db/{i}.jpg" for i in range(6)],
        db_utm=[[3, 4], [100, -20], [260, 0], [1000, 0], [1100, 0], [1200, 0]],
        query_paths=[f"queries/{i}.jpg" for i in range(3)],
        query_utm=[[0, 0], [100, 0], [200, 0]],
        image_root=os.fspath(root),
        name="street",
    )


def _pixels_near(png_path, color, tolerance=6) -> int:
    pixels = np.asarray(Image.open(png_path).convert("RGB"), dtype=np.int16)
    return int(np.all(np.abs(pixels - np.array(color)) <= tolerance, axis=-1).sum())


def test_panels_show_the_top1_image_framed_by_the_25_m_rule(street, tiny_model, tmp_path):
    panels = write_panels(
        tiny_model, street, [0, 1, 2], tmp_path, method="gradcam++", progress=False
    )

    # Independent retrieval: Pillow-decoded files, the Keras model, a float64 argmax.
    def read(paths):
        return np.stack([np.asarray(Image.open(p).convert("RGB"), "float32") for p in paths])

    query_desc = keras.ops.convert_to_numpy(tiny_model(read(street.query_image_paths())))
    db_desc = keras.ops.convert_to_numpy(tiny_model(read(street.db_image_paths())))
    similarity = query_desc.astype("float64") @ db_desc.astype("float64").T
    assert [p.rows[0].top1_db_id for p in panels] == similarity.argmax(axis=1).tolist()
    assert [p.rows[0].top1_db_id for p in panels] == [0, 1, 2]  # each query finds its copy
    np.testing.assert_allclose([p.rows[0].distance_m for p in panels], [5.0, 20.0, 60.0])
    assert [p.rows[0].correct for p in panels] == [True, True, False]
    np.testing.assert_allclose(
        [p.rows[0].similarity for p in panels], similarity.max(axis=1), atol=2e-3
    )
    for panel in panels:
        assert os.path.basename(panel.path) == f"query_{panel.query_id:05d}.png"
        frame = CORRECT_COLOR if panel.rows[0].correct else WRONG_COLOR
        other = WRONG_COLOR if panel.rows[0].correct else CORRECT_COLOR
        assert _pixels_near(panel.path, frame) > 1000  # a frame around a ~230x170 pixel image
        assert _pixels_near(panel.path, other) < 50
        assert Image.open(panel.path).format == "PNG"
    summary = json.loads((tmp_path / "panels.json").read_text())
    assert summary["method"] == "gradcam++" and summary["image_size"] == [48, 64]
    assert [p["rows"][0]["correct"] for p in summary["panels"]] == [True, True, False]


def test_two_models_side_by_side_with_precomputed_descriptors(street, tiny_model, tmp_path):
    keras.utils.set_random_seed(7)
    baseline = build_embedding_model("tiny", num_clusters=4, input_shape=(None, None, 3))
    features = keras.ops.convert_to_numpy(feature_model(baseline)(_load(street.db_image_paths())))
    baseline.get_layer("netvlad").initialize_from_descriptors(features.reshape(-1, 128))
    db_desc = keras.ops.convert_to_numpy(baseline(_load(street.db_image_paths())))
    query_desc = keras.ops.convert_to_numpy(baseline(_load(street.query_image_paths())))
    # Planting a wrong ranking in the precomputed descriptors shows they are the ones used.
    db_desc[[0, 4]] = db_desc[[4, 0]]
    single = write_panels(tiny_model, street, [0], tmp_path / "one", progress=False)
    panels = write_panels(
        tiny_model,
        street,
        [0],
        tmp_path / "two",
        method="saliency",
        model_name="SARE",
        compare_model=baseline,
        compare_db_descriptors=db_desc,
        compare_query_descriptors=query_desc,
        compare_name="NetVLAD",
        progress=False,
    )
    rows = panels[0].rows
    assert [row.model_name for row in rows] == ["SARE", "NetVLAD"]
    assert rows[0].top1_db_id == 0 and rows[1].top1_db_id == 4
    assert rows[1].correct is False and rows[1].distance_m == pytest.approx(1100.0)
    one_row = Image.open(single[0].path).size
    two_rows = Image.open(panels[0].path).size
    assert two_rows[0] == one_row[0] and two_rows[1] > 1.6 * one_row[1]


def _load(paths):
    return np.stack([np.asarray(Image.open(p).convert("RGB"), "float32") for p in paths])


def test_write_panels_refuses_bad_queries_and_descriptors(
    street, tiny_model, planted_models, tmp_path
):
    with pytest.raises(ValueError, match=r"takes 64x96 images only.*\(48, 64\)"):
        write_panels(planted_models["A"][0], street, [0], tmp_path, image_size=(48, 64))
    with pytest.raises(ValueError, match=r"out of range.*\[3\]"):
        write_panels(tiny_model, street, [0, 3], tmp_path, progress=False)
    with pytest.raises(ValueError, match="empty"):
        write_panels(tiny_model, street, [], tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"`db_descriptors` must be \[6, D\]"):
        write_panels(
            tiny_model, street, [0], tmp_path, db_descriptors=np.zeros((5, 512)), progress=False
        )


def test_framed_puts_a_solid_frame_around_the_whole_image():
    image = np.random.default_rng(0).uniform(0, 255, (10, 12, 3))
    result = framed(image, (0, 200, 0), width=2)
    assert result.dtype == np.uint8 and result.shape == (14, 16, 3)
    border = np.ones((14, 16), bool)
    border[2:-2, 2:-2] = False
    assert np.all(result[border] == (0, 200, 0))
    np.testing.assert_array_equal(result[2:-2, 2:-2], np.round(image).astype(np.uint8))


def test_overlay_is_the_heat_colour_over_the_grey_image():
    image = np.zeros((2, 2, 3))
    image[0, 0] = (255, 0, 0)
    heatmap = np.array([[0.0, 1.0], [0.5, 0.25]])
    blended = overlay(image, heatmap, cmap="gray", alpha=0.5)
    # grey colour map: heat h -> (h, h, h) * 255; red pixel -> grey 0.299 * 255.
    expected_00 = 0.5 * 0.299 * 255 + 0.5 * 0.0
    np.testing.assert_allclose(blended[0, 0], [expected_00] * 3, atol=0.51)
    np.testing.assert_allclose(blended[0, 1], [127.5] * 3, atol=0.51)
    np.testing.assert_allclose(blended[1, 0], [0.5 * 255 * 0.5] * 3, atol=1.5)
