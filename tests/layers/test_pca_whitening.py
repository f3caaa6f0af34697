"""PCA whitening against an SVD-based numpy reference, identity covariance, few-sample regime."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sare_tf.layers import PCAWhitening, fit_pca_whitening


def svd_whitening_reference(x, output_dim, epsilon=1e-9):
    """Principal directions from the SVD of the centred data (a different route than eigh)."""
    mean = x.mean(axis=0)
    _, singular_values, vt = np.linalg.svd(x - mean, full_matrices=False)
    eigenvalues = singular_values[:output_dim] ** 2 / x.shape[0]
    return mean, vt[:output_dim].T / np.sqrt(eigenvalues + epsilon)


def _anisotropic(rng, num_samples, depth):
    scales = np.geomspace(10.0, 0.1, depth)
    return rng.normal(size=(num_samples, depth)) * scales + rng.normal(size=depth)


def _align_signs(actual, expected):
    """Eigenvectors are defined up to sign: flip columns of `actual` to match `expected`."""
    signs = np.sign(np.sum(actual * expected, axis=0))
    return actual * signs


@pytest.mark.parametrize("num_samples, depth, output_dim", [(500, 32, 8), (60, 200, 40)])
def test_matches_svd_reference(num_samples, depth, output_dim):
    rng = np.random.default_rng(0)
    x = _anisotropic(rng, num_samples, depth)
    mean, projection = fit_pca_whitening(x, output_dim)
    ref_mean, ref_projection = svd_whitening_reference(x, output_dim)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-10)
    np.testing.assert_allclose(
        _align_signs(projection, ref_projection), ref_projection, rtol=1e-6, atol=1e-8
    )

    layer = PCAWhitening.from_descriptors(x.astype("float32"), output_dim)
    output = keras.ops.convert_to_numpy(layer(x[:10].astype("float32")))
    expected = (x[:10] - ref_mean) @ ref_projection
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(output), np.abs(expected), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "num_samples, depth, output_dim",
    [(2000, 64, 64), (800, 256, 128), (300, 1024, 128)],  # the last: fewer samples than dims
)
def test_whitened_outputs_have_identity_covariance(num_samples, depth, output_dim):
    rng = np.random.default_rng(1)
    x = _anisotropic(rng, num_samples, depth).astype("float32")
    layer = PCAWhitening.from_descriptors(x, output_dim, l2_normalize=False)
    y = keras.ops.convert_to_numpy(layer(x)).astype("float64")
    covariance = np.cov(y, rowvar=False, bias=True)
    np.testing.assert_allclose(covariance, np.eye(output_dim), atol=1e-3)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-3)


@pytest.mark.slow
def test_vlad_sized_input_whitened_with_gram_trick():
    """32768-d NetVLAD vectors are whitened from fewer samples than dims (the Gram trick); here
    4096-d from 2100 samples to 2048 dims, the same ratios as 8192-d from 4200 to 4096."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2100, 4096)).astype("float32") * np.geomspace(3, 0.3, 4096).astype(
        "float32"
    )
    layer = PCAWhitening.from_descriptors(x, 2048, l2_normalize=False)
    y = keras.ops.convert_to_numpy(layer(x[:1000])).astype("float64")
    assert y.shape == (1000, 2048)
    full = keras.ops.convert_to_numpy(layer(x)).astype("float64")
    covariance = full.T @ full / full.shape[0]
    np.testing.assert_allclose(np.diag(covariance), 1.0, atol=1e-3)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 1e-3


def test_max_samples_subsamples_reproducibly():
    rng = np.random.default_rng(3)
    x = _anisotropic(rng, 400, 16)
    first = fit_pca_whitening(x, 4, max_samples=100, seed=7)
    again = fit_pca_whitening(x, 4, max_samples=100, seed=7)
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], x.mean(axis=0))


def test_too_few_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="needs at least 9 descriptors"):
        fit_pca_whitening(np.random.default_rng(0).normal(size=(5, 32)), 8)


def test_serialization_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    x = _anisotropic(rng, 200, 16).astype("float32")
    inputs = keras.Input((16,))
    model = keras.Model(inputs, PCAWhitening(6, name="pca_whitening")(inputs))
    model.get_layer("pca_whitening").fit(x)
    expected = keras.ops.convert_to_numpy(model(x[:5]))
    path = tmp_path / "pca.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(x[:5])), expected)
    assert reloaded.get_layer("pca_whitening").get_config()["output_dim"] == 6


def test_float32_under_mixed_precision():
    rng = np.random.default_rng(5)
    x = _anisotropic(rng, 200, 16).astype("float32")
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = PCAWhitening.from_descriptors(x, 8)
    assert layer(x[:3]).dtype == "float32"
