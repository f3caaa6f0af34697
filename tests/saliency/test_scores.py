"""The similarity score and its two-way wrapper, against numpy in float64."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.saliency import PairedSimilarity, similarity_model, similarity_score


def _unit_rows(rng, count, depth):
    x = rng.normal(size=(count, depth))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_paired_similarity_pairs_row_n_with_reference_n_mod_r():
    rng = np.random.default_rng(0)
    references = _unit_rows(rng, 3, 5)
    descriptors = _unit_rows(rng, 9, 5)  # three whole copies of a batch of 3, as Score-CAM sends
    layer = PairedSimilarity(3)
    layer.build((None, 5))
    layer.set_references(references)
    output = keras.ops.convert_to_numpy(layer(descriptors.astype("float32")))
    expected = np.array([descriptors[n] @ references[n % 3] for n in range(9)])
    assert output.dtype == np.float32
    np.testing.assert_allclose(output[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(output[:, 1], -expected, atol=1e-6)


def test_paired_similarity_refuses_a_batch_that_is_not_whole_copies():
    layer = PairedSimilarity(3)
    layer.build((None, 4))
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of 3"):
        layer(np.ones((4, 4), "float32"))
    with pytest.raises(ValueError, match="num_references"):
        PairedSimilarity(0)
    with pytest.raises(ValueError, match="shape"):
        layer.set_references(np.ones((2, 4)))


def test_similarity_model_scores_the_embedding_descriptor(tiny_model, images):
    queries, others = images
    references = keras.ops.convert_to_numpy(tiny_model(others)).astype("float64")
    model = similarity_model(tiny_model, references)
    # Flat graph: the backbone layers are reachable by name for the CAM methods.
    assert model.get_layer("block4_conv2") is tiny_model.get_layer("block4_conv2")
    scores = keras.ops.convert_to_numpy(similarity_score(model(queries)))
    descriptors = keras.ops.convert_to_numpy(tiny_model(queries)).astype("float64")
    expected = np.sum(descriptors * references, axis=1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert len(set(np.round(expected, 4))) == 3  # the three pairs differ: pairing is visible
    with pytest.raises(ValueError, match=r"\[R, 512\]"):
        similarity_model(tiny_model, references[:, :10])


def test_offsets_and_scale_turn_the_scorecam_softmax_into_a_tempered_sigmoid():
    # Score-CAM scores softmax(output)[0]; with offset s_0 and scale 1/(2T) that must be
    # sigmoid((s - s_0) / T), increasing in s.
    rng = np.random.default_rng(1)
    references = _unit_rows(rng, 2, 6)
    descriptors = _unit_rows(rng, 6, 6)
    offsets = np.array([0.3, -0.1])
    temperature = 0.1
    layer = PairedSimilarity(2)
    layer.build((None, 6))
    layer.set_references(references, offsets=offsets, scale=0.5 / temperature)
    output = layer(descriptors.astype("float32"))
    weights = similarity_score(tf.nn.softmax(output)).numpy()
    s = np.array([descriptors[n] @ references[n % 2] for n in range(6)])
    expected = 1.0 / (1.0 + np.exp(-(s - offsets[np.arange(6) % 2]) / temperature))
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        layer.set_references(references, scale=0.0)
    with pytest.raises(ValueError, match="offsets"):
        layer.set_references(references, offsets=[0.0])
