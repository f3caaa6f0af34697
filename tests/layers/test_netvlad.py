"""NetVLAD against a plain numpy loop of the same maths, cluster init, gradients, saving, precision."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from sare_tf.layers import NetVLAD


def netvlad_loop_reference(features, kernel, centroids):
    """Float64 loops over batch, locations, clusters and channels: the maths written out once."""
    batch, height, width, depth = features.shape
    num_clusters = centroids.shape[0]
    out = np.zeros((batch, num_clusters * depth))
    for b in range(batch):
        vlad = np.zeros((num_clusters, depth))
        for i in range(height):
            for j in range(width):
                x = features[b, i, j] / max(np.sqrt(np.sum(features[b, i, j] ** 2)), 1e-6)
                logits = [
                    sum(x[d] * kernel[d, k] for d in range(depth)) for k in range(num_clusters)
                ]
                exps = [math.exp(v - max(logits)) for v in logits]
                for k in range(num_clusters):
                    a = exps[k] / sum(exps)
                    for d in range(depth):
                        vlad[k, d] += a * (x[d] - centroids[k, d])
        for k in range(num_clusters):
            vlad[k] /= max(np.sqrt(np.sum(vlad[k] ** 2)), 1e-6)
        flat = [vlad[k, d] for k in range(num_clusters) for d in range(depth)]  # index k * D + d
        out[b] = np.array(flat) / np.sqrt(np.sum(np.square(flat)))
    return out


@pytest.mark.parametrize(
    "num_clusters, depth, height, width",
    [(2, 3, 1, 1), (4, 8, 3, 5), (8, 16, 4, 4), (5, 7, 2, 6)],
)
def test_matches_numpy_loop(num_clusters, depth, height, width):
    rng = np.random.default_rng(num_clusters * 100 + depth)
    features = rng.normal(size=(2, height, width, depth))
    kernel = rng.normal(scale=3.0, size=(depth, num_clusters))
    centroids = rng.normal(size=(num_clusters, depth))
    layer = NetVLAD(num_clusters)
    layer.build((None, None, None, depth))
    layer.assignment_kernel.assign(kernel.reshape(1, 1, depth, num_clusters).astype("float32"))
    layer.centroids.assign(centroids.astype("float32"))

    output = keras.ops.convert_to_numpy(layer(features.astype("float32")))
    expected = netvlad_loop_reference(features, kernel, centroids)

    assert output.dtype == np.float32
    assert output.shape == (2, num_clusters * depth)
    np.testing.assert_allclose(output, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-6)


def test_set_centroids_sets_alpha_times_normalised_centroids():
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(3, 4))
    layer = NetVLAD(3)
    layer.set_centroids(centroids, alpha=7.5)
    kernel = keras.ops.convert_to_numpy(layer.assignment_kernel)[0, 0]  # [D, K]
    for k in range(3):
        np.testing.assert_allclose(
            kernel[:, k], 7.5 * centroids[k] / np.linalg.norm(centroids[k]), rtol=1e-6
        )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.centroids), centroids, rtol=1e-6)
    assert layer.is_initialized


def test_cluster_major_layout():
    """Only cluster k's residual is non-zero when every location is hard-assigned to k."""
    depth, num_clusters = 3, 4
    layer = NetVLAD(num_clusters)
    centroids = np.eye(num_clusters, depth) * 0.5
    layer.set_centroids(np.where(centroids == 0, 1e-3, centroids), alpha=1000.0)
    features = np.zeros((1, 1, 2, depth), dtype="float32")
    features[..., 1] = 1.0  # nearest to centroid 1
    output = keras.ops.convert_to_numpy(layer(features))[0]
    blocks = output.reshape(num_clusters, depth)
    assert np.linalg.norm(blocks[1]) == pytest.approx(1.0, abs=1e-4)
    assert np.abs(np.delete(blocks, 1, axis=0)).max() < 1e-3


def _clustered_descriptors(rng, centres, per_centre, noise):
    points = np.repeat(centres, per_centre, axis=0)
    return points + rng.normal(scale=noise, size=points.shape)


def test_initialize_from_descriptors_recovers_centres_and_alpha():
    rng = np.random.default_rng(0)
    num_clusters, depth = 6, 32
    centres = rng.normal(size=(num_clusters, depth))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    descriptors = _clustered_descriptors(rng, centres, 200, noise=0.03)
    layer = NetVLAD(num_clusters)

    alpha = layer.initialize_from_descriptors(descriptors.astype("float32"), seed=3)

    learned = keras.ops.convert_to_numpy(layer.centroids)
    learned_hat = learned / np.linalg.norm(learned, axis=1, keepdims=True)
    similarity = centres @ learned_hat.T
    assert np.all(similarity.max(axis=1) > 0.99), similarity.max(axis=1)
    assert sorted(similarity.argmax(axis=1).tolist()) == list(range(num_clusters))

    # alpha = -ln(0.01) / mean(top1 - top2) of x_hat . c_hat, written out independently.
    x_hat = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    dots = np.sort(x_hat @ learned_hat.T, axis=1)[:, ::-1]
    assert alpha == pytest.approx(-np.log(0.01) / np.mean(dots[:, 0] - dots[:, 1]), rel=1e-5)
    assert float(keras.ops.convert_to_numpy(layer.alpha)) == pytest.approx(alpha, rel=1e-6)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_descriptor_equal_to_a_centroid_is_assigned_to_it(seed):
    # Local CNN descriptors spread widely around their visual word, so the mean top1-top2 gap is
    # small and alpha large; a descriptor sitting on a centroid has a much larger gap than that
    # average and so gets far more than the 100:1 ratio alpha is calibrated for. (With very
    # tight clusters the gap of a centroid equals the average one and the ratio is only ~100:1.)
    rng = np.random.default_rng(seed)
    num_clusters, depth = 8, 64
    centres = rng.normal(size=(num_clusters, depth))
    descriptors = _clustered_descriptors(rng, centres, 100, noise=1.5)
    layer = NetVLAD(num_clusters)
    layer.initialize_from_descriptors(descriptors.astype("float32"))
    learned = keras.ops.convert_to_numpy(layer.centroids)

    assignment = keras.ops.convert_to_numpy(layer.soft_assignment(learned[None, None]))[0, 0]

    np.testing.assert_allclose(assignment.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(np.diag(assignment) >= 0.99), np.diag(assignment)


def test_initialize_rejects_too_few_descriptors():
    with pytest.raises(ValueError, match="at least num_clusters=8"):
        NetVLAD(8).initialize_from_descriptors(np.ones((3, 4), "float32"))


def test_get_config_and_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    features = rng.normal(size=(2, 3, 4, 8)).astype("float32")
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, NetVLAD(4, name="netvlad")(inputs))
    layer = model.get_layer("netvlad")
    layer.set_centroids(rng.normal(size=(4, 8)), alpha=3.0)
    expected = keras.ops.convert_to_numpy(model(features))

    clone = NetVLAD.from_config(layer.get_config())
    clone.build((None, None, None, 8))
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(features)), expected)

    path = tmp_path / "netvlad.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(features)), expected)
    assert reloaded.get_layer("netvlad").is_initialized


def test_mixed_bfloat16_output_is_float32_and_close_to_float32():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(3, 5, 5, 16)).astype("float32")
    centroids = rng.normal(size=(8, 16))
    reference = NetVLAD(8)
    reference.set_centroids(centroids, alpha=10.0)
    expected = keras.ops.convert_to_numpy(reference(features))

    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = NetVLAD(8)
    layer.set_centroids(centroids, alpha=10.0)
    half_features = keras.ops.cast(features, "bfloat16")  # what a bf16 backbone hands over
    output = layer(half_features)

    assert output.dtype == "float32"
    output = keras.ops.convert_to_numpy(output)
    cosine = np.sum(output * expected, axis=1)
    assert np.all(cosine > 1 - 1e-2), cosine


def test_gradients_reach_both_weights():
    rng = np.random.default_rng(4)
    layer = NetVLAD(4)
    layer.set_centroids(rng.normal(size=(4, 6)), alpha=2.0)
    features = keras.ops.convert_to_tensor(rng.normal(size=(2, 3, 3, 6)).astype("float32"))
    weights = rng.normal(size=(2, 24)).astype("float32")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(features) * weights)
    grads = tape.gradient(loss, [layer.assignment_kernel.value, layer.centroids.value])
    assert [v.name for v in layer.trainable_weights] == ["assignment_kernel", "centroids"]
    for grad in grads:
        assert grad is not None and np.abs(grad.numpy()).max() > 0


def test_adapt_is_the_fitting_verb_of_both_data_fitted_layers():
    from sare_tf.layers import PCAWhitening

    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(200, 8)).astype("float32")
    layer, reference = NetVLAD(3), NetVLAD(3)
    assert layer.adapt(descriptors, seed=1) == reference.initialize_from_descriptors(
        descriptors, seed=1
    )
    np.testing.assert_array_equal(layer.centroids.numpy(), reference.centroids.numpy())
    pca, pca_reference = PCAWhitening(4), PCAWhitening(4)
    pca.adapt(descriptors)
    pca_reference.fit(descriptors)
    np.testing.assert_array_equal(pca.projection.numpy(), pca_reference.projection.numpy())
