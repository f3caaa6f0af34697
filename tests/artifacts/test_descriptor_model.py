"""Loading descriptor models: .keras files, SavedModels, TF Serving roots; image size and precision."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sare_tf.artifacts import load_descriptor_model
from sare_tf.artifacts.versions import latest_version_dir
from sare_tf.encoding import extract_descriptors


def test_keras_file_loading_with_mixed_precision(tiny_model, jpeg_folder, tmp_path):
    _, paths = jpeg_folder
    path = tmp_path / "tiny.keras"
    tiny_model.save(path)
    loaded = load_descriptor_model(path)
    assert (loaded.kind, loaded.name, loaded.image_size) == ("keras", "tiny", None)
    reference = extract_descriptors(tiny_model, paths, image_size=(32, 32), progress=False)
    np.testing.assert_allclose(
        extract_descriptors(loaded.model, paths, image_size=(32, 32), progress=False),
        reference,
        atol=1e-6,
    )
    fast = load_descriptor_model(path, precision="mixed_bfloat16")
    assert fast.model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert fast.model.get_layer("netvlad").compute_dtype == "float32"
    low = extract_descriptors(fast.model, paths, image_size=(32, 32), progress=False)
    assert low.dtype == np.float32
    cosine = np.sum(low * reference, axis=1)
    assert np.all(cosine > 0.98) and not np.array_equal(low, reference)


def test_model_loading_errors_and_serving_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="Model not found"):
        load_descriptor_model(tmp_path / "nope.keras")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="not a SavedModel"):
        load_descriptor_model(tmp_path / "empty_dir")
    other = tmp_path / "model.h5"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=".keras file or a SavedModel"):
        load_descriptor_model(other)
    # A TF Serving root: the highest numbered version holding a saved_model.pb is picked.
    for version in ("1", "2", "10", "11"):
        os.makedirs(tmp_path / "root" / version)
    for version in ("1", "2", "10"):
        (tmp_path / "root" / version / "saved_model.pb").write_bytes(b"")
    assert latest_version_dir(str(tmp_path / "root"), "saved_model.pb").endswith(
        os.path.join("root", "10")
    )


def test_training_image_size_is_stored_in_the_keras_file(tmp_path):
    from sare_tf.artifacts import (
        describe_model,
        resolve_image_size,
        store_image_size,
        stored_image_size,
    )
    from sare_tf.models import build_embedding_model

    model = build_embedding_model("tiny", num_clusters=4)
    assert stored_image_size(model) is None
    with pytest.raises(ValueError, match="does not record the image size"):
        resolve_image_size(model, required=True)
    store_image_size(model, (48, 64))
    path = tmp_path / "sized.keras"
    model.save(path)
    loaded = load_descriptor_model(path)
    assert loaded.image_size == (48, 64)
    assert resolve_image_size(loaded) == (48, 64)
    assert resolve_image_size(loaded, (30, 40)) == (30, 40)  # asked for: wins, any-size model
    assert describe_model(loaded.model) == {
        "backbone": "tiny",
        "feature_layer": "block4_conv2",
        "aggregator": "netvlad",
        "num_clusters": 4,
        "pca_dim": None,
        "descriptor_dim": 512,
        "image_size": [48, 64],
        "precision": "float32",
    }
    fixed = build_embedding_model("tiny", num_clusters=4, input_shape=(32, 32, 3))
    assert resolve_image_size(fixed) == (32, 32)
    with pytest.raises(ValueError, match="takes 32x32 images only"):
        resolve_image_size(fixed, (48, 64))


def test_garbage_keras_file_is_not_reported_as_missing(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match=r"garbage.keras is not a valid \.keras file"):
        load_descriptor_model(garbage)
    import zipfile

    no_config = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(no_config, "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(ValueError, match="not a valid .keras file"):
        load_descriptor_model(no_config)
