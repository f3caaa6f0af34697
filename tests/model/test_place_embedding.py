"""PlaceEmbedding: a model that carries its config and answers questions about itself."""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import pytest

from sare_tf.artifacts import load_descriptor_model, model_fingerprint
from sare_tf.layers import NetVLAD, PCAWhitening
from sare_tf.model import (
    BACKBONE_NAMES,
    GeoClassifier,
    PlaceEmbedding,
    TupleModel,
    build_embedding_model,
    upgrade_functional,
    with_pca_whitening,
)

DATA = pathlib.Path(__file__).parent / "data"
LEGACY = DATA / "legacy_tiny_netvlad4_pca16"
TINY_PLAIN = DATA / "place_embedding_tiny_plain_netvlad4"


def _images(count=2, size=(48, 64), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, *size, 3)).astype("float32")


def test_the_model_knows_its_parts_sizes_and_fingerprint():
    model = PlaceEmbedding(
        "tiny",
        aggregator=NetVLAD(4, name="netvlad"),
        whitening=None,
        trainable_from=None,
        input_shape=(None, None, 3),
    )
    model.image_size = (48, 64)
    assert model.backbone_name == "tiny" and model.aggregator_name == "netvlad"
    assert model.descriptor_size == 4 * 128 and model.whitening_dim is None
    assert model.image_size == (48, 64) and model.preprocessing.mode == "tf"
    assert model.describe() == {
        "backbone": "tiny",
        "feature_layer": "block4_conv2",
        "aggregator": "netvlad",
        "num_clusters": 4,
        "pca_dim": None,
        "descriptor_dim": 512,
        "image_size": [48, 64],
        "precision": "float32",
    }
    before = model.fingerprint
    assert before.startswith("sha256:") and len(before) == 7 + 64
    model.get_layer("block1_conv1").kernel.assign(
        model.get_layer("block1_conv1").kernel.numpy() + 1.0
    )
    assert model.fingerprint != before


def test_the_config_carries_backbone_aggregator_whitening_and_preprocessing(tmp_path):
    model = build_embedding_model("tiny", num_clusters=3, pca_dim=8)
    with_size = model.get_config()
    assert with_size["backbone"] == "tiny"
    assert with_size["aggregator"]["config"]["num_clusters"] == 3
    assert with_size["whitening"]["config"]["output_dim"] == 8
    assert with_size["preprocessing"]["config"]["mode"] == "tf"
    model.image_size = (40, 56)
    model.freeze_before("block3_conv1")
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is PlaceEmbedding
    assert reloaded.image_size == (40, 56) and reloaded.trainable_from == "block3_conv1"
    assert not reloaded.get_layer("block2_conv2").trainable
    assert reloaded.get_layer("block3_conv1").trainable
    assert reloaded.fingerprint == model.fingerprint
    images = _images(size=(40, 56))
    np.testing.assert_array_equal(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )


def test_task_models_wrap_the_embedding_and_save_it(tmp_path):
    embedding = build_embedding_model("tiny", num_clusters=2)
    tuple_model = TupleModel(embedding, 2)
    assert tuple_model.embedding is embedding
    path = tmp_path / "tuple.keras"
    tuple_model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is TupleModel and type(reloaded.embedding) is PlaceEmbedding
    assert reloaded.embedding.fingerprint == embedding.fingerprint
    classifier = GeoClassifier(embedding, 5)
    assert classifier.embedding is embedding and classifier.output_shape == (None, 5)
    loaded = load_descriptor_model(path)  # a task checkpoint gives its embedding
    assert isinstance(loaded.model, PlaceEmbedding)


def test_a_keras_file_written_before_the_class_existed_still_loads():
    expected = np.load(f"{LEGACY}.npz")
    legacy = keras.models.load_model(f"{LEGACY}.keras")
    assert type(legacy).__name__ == "Functional"  # as written then
    loaded = load_descriptor_model(f"{LEGACY}.keras")
    assert isinstance(loaded.model, PlaceEmbedding)
    assert loaded.image_size == (48, 64)
    assert loaded.model.describe()["pca_dim"] == 16
    assert isinstance(loaded.model.whitening, PCAWhitening)
    descriptors = loaded.model.predict(expected["images"], verbose=0)
    np.testing.assert_allclose(descriptors, expected["descriptors"], atol=1e-6)
    # The fingerprint of its weights is unchanged by the upgrade (indexes built with it match).
    assert model_fingerprint(loaded) == upgrade_functional(legacy).fingerprint
    assert loaded.model.backbone_name == "tiny-plain"  # the graph it was written with


def test_a_model_saved_before_its_backbone_changed_loads_with_the_graph_it_had():
    """`tiny` gained group normalisation; files saved with the plain graph rebuild that graph."""
    expected = np.load(f"{TINY_PLAIN}.npz")
    loaded = keras.models.load_model(f"{TINY_PLAIN}.keras")
    assert isinstance(loaded, PlaceEmbedding) and loaded.backbone_name == "tiny-plain"
    assert loaded.image_size == (48, 64)
    np.testing.assert_allclose(
        loaded.predict(expected["images"], verbose=0), expected["descriptors"], atol=1e-6
    )
    assert loaded.fingerprint == str(expected["fingerprint"])
    # Saved again today, it records its revision and comes back as the same graph.
    assert loaded.get_config()["backbone_revision"] == 1
    assert PlaceEmbedding.from_config(loaded.get_config()).backbone_name == "tiny-plain"
    today = PlaceEmbedding("tiny", NetVLAD(4, name="netvlad"), input_shape=(48, 64, 3))
    assert today.get_config()["backbone_revision"] == 2
    assert "GroupNormalization" in {type(layer).__name__ for layer in today.layers}


def test_pca_whitening_keeps_the_class_and_the_backbone_weights():
    model = build_embedding_model("tiny", num_clusters=2)
    netvlad = np.random.default_rng(0).normal(size=(40, 256)).astype("float32")
    whitened = with_pca_whitening(model, netvlad, 8)
    assert isinstance(whitened, PlaceEmbedding) and whitened.whitening_dim == 8
    np.testing.assert_array_equal(
        whitened.get_layer("block1_conv1").kernel.numpy(),
        model.get_layer("block1_conv1").kernel.numpy(),
    )


def test_unknown_backbone_is_refused_with_the_names():
    with pytest.raises(ValueError, match="Unknown backbone.*tiny"):
        PlaceEmbedding("vgg17")
    assert set(BACKBONE_NAMES) == {
        "vgg16", "keras-resnet50", "resnet18", "resnet50", "resnet101", "resnet50-layer3",
        "dinov2-vits14", "dinov2-vitb14", "dinov2-vits14-tokens", "dinov2-vitb14-tokens", "tiny",
        "tiny-plain",
    }  # fmt: skip
