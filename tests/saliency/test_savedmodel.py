"""Saliency through exported SavedModels: gradient methods work, CAM methods say why not."""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.export import export_saved_model
from sare_tf.saliency import load_model, saliency_maps


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """The tiny model exported by sare_tf.export into a TF Serving layout root/tiny/1."""
    root = tmp_path_factory.mktemp("served") / "tiny"
    export_saved_model(tiny_model, os.fspath(root / "1"), image_size=(64, 96))
    return root


@pytest.fixture(scope="module")
def served(exported):
    """The export loaded back from its model root (the newest numbered version, here 1)."""
    return load_model(exported)


@pytest.mark.parametrize("method", ["saliency", "smoothgrad"])
def test_gradient_methods_through_a_savedmodel_equal_those_of_the_keras_model(
    method, served, tiny_model, make_images
):
    queries = make_images(2, seed=30)
    references = keras.ops.convert_to_numpy(tiny_model(make_images(2, seed=31)))
    assert [layer.__class__.__name__ for layer in served.layers][-1] == "SavedModelSignature"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(served(queries)),
        keras.ops.convert_to_numpy(tiny_model(queries)),
        atol=1e-5,
    )
    through_savedmodel = saliency_maps(served, queries, references, method=method, smooth_samples=3)
    through_keras = saliency_maps(tiny_model, queries, references, method=method, smooth_samples=3)
    assert through_savedmodel.shape == (2, 64, 96)
    # The SavedModel runs the same maths through other kernels (grappler may fuse conv + ReLU):
    # float32 rounding can flip a ReLU or max-pool decision at a near-tie, which reroutes the
    # gradient of a handful of pixels. Group normalisation makes every pixel's gradient depend
    # on image-wide statistics, so smoothgrad's noisy copies spread that rounding: maps scaled
    # to a maximum of 1 agree to 1e-4 (saliency) and 4e-3 (smoothgrad) nearly everywhere.
    assert np.abs(through_keras).max() == pytest.approx(1.0)
    close = np.isclose(
        through_savedmodel, through_keras, rtol=0, atol=1e-4 if method == "saliency" else 4e-3
    )
    assert close.mean() > 0.995, f"{(~close).sum()} of {close.size} pixels differ"
    correlation = np.corrcoef(through_savedmodel.ravel(), through_keras.ravel())[0, 1]
    assert correlation > 0.999


def test_the_object_tf_saved_model_load_returns_works_too(exported, tiny_model, make_images):
    queries = make_images(1, seed=32)
    references = keras.ops.convert_to_numpy(tiny_model(make_images(1, seed=33)))
    expected = saliency_maps(tiny_model, queries, references, method="saliency")
    loaded = tf.saved_model.load(os.fspath(exported / "1"))
    np.testing.assert_allclose(
        saliency_maps(loaded, queries, references, method="saliency"), expected, atol=1e-4
    )


@pytest.mark.parametrize("method", ["gradcam++", "scorecam"])
def test_cam_methods_on_a_savedmodel_raise_a_value_error_naming_the_method(
    method, served, make_images
):
    images = make_images(1, seed=34)
    expected = re.escape(f"method='{method}' needs the feature map") + ".*SavedModel"
    with pytest.raises(ValueError, match=expected):
        saliency_maps(served, images, np.zeros(512, "float32"), method=method)


def test_loading_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_model(tmp_path / "missing.keras")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a SavedModel"):
        load_model(tmp_path / "empty")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="weights.npz"):
        load_model(tmp_path / "weights.npz")
