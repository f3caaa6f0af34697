"""netvlad_tf_open's TensorFlow checkpoint: written as a real V2 bundle with the variable names of
`nets.vgg16NetvladPca`, checked against a numpy forward pass of that graph (NHWC, MatConvNet's
dimension-major VLAD), including the whitening permutation on a non-symmetric case."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.convert import import_checkpoint
from sare_tf.convert.netvlad_tf import TF_CONV_NAMES, wpca_rows_to_cluster_major

CHANNELS = [4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8]
POOL_AFTER = {"conv1_2", "conv2_2", "conv3_3", "conv4_3"}
RELU_BEFORE_POOL = POOL_AFTER  # the MatConvNet graph pools, then applies these ReLUs
D, K, P = 8, 5, 12  # K != D, so a wrong flattening order cannot pass


def _variables(seed: int, wpca: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    variables = {"vgg16_netvlad_pca/average_rgb": np.array([123.7, 116.8, 103.9], np.float32)}
    channels = 3
    for name, out in zip(TF_CONV_NAMES, CHANNELS, strict=True):
        scale = 3.0 * np.sqrt(2.0 / (9 * channels))
        variables[f"vgg16_netvlad_pca/{name}/kernel"] = rng.normal(0, scale, (3, 3, channels, out))
        variables[f"vgg16_netvlad_pca/{name}/bias"] = rng.normal(0, 0.1, out)
        channels = out
    centres = rng.normal(size=(K, D))
    centres = 0.5 * centres / np.linalg.norm(centres, axis=1, keepdims=True)
    variables["vgg16_netvlad_pca/assignment/kernel"] = 20.0 * centres.T[None, None]
    variables["vgg16_netvlad_pca/cluster_centers"] = -centres.T[None, None, None]  # x + C
    if wpca:
        variables["vgg16_netvlad_pca/WPCA/kernel"] = rng.normal(size=(1, 1, D * K, P))
        variables["vgg16_netvlad_pca/WPCA/bias"] = rng.normal(0, 0.1, P)
    return {name: np.asarray(value, np.float32) for name, value in variables.items()}


def _save_checkpoint(variables: dict, prefix: str) -> None:
    names = sorted(variables)
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[tf.constant(variables[n]) for n in names],
    )  # fmt: skip


def _conv_same(x, kernel, bias):
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


def _pool(x):
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _matconvnet_normalize(x):
    return x / np.sqrt(np.sum(x**2, axis=-1, keepdims=True) + 1e-12)


def reference(variables, images_rgb_0_255):
    """nets.vgg16NetvladPca + layers.netVLAD, in float64 numpy (without WPCA: the VLAD vector in
    sare_tf's cluster-major order, the same vector as the source's up to that permutation)."""
    v = {name: value.astype(np.float64) for name, value in variables.items()}
    x = images_rgb_0_255 - v["vgg16_netvlad_pca/average_rgb"]
    for name in TF_CONV_NAMES:
        x = _conv_same(
            x, v[f"vgg16_netvlad_pca/{name}/kernel"], v[f"vgg16_netvlad_pca/{name}/bias"]
        )
        if name not in RELU_BEFORE_POOL and name != "conv5_3":
            x = np.maximum(x, 0)
        if name in POOL_AFTER:
            x = np.maximum(_pool(x), 0)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    logits = x @ v["vgg16_netvlad_pca/assignment/kernel"][0, 0]  # [n, h, w, K]
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    c = v["vgg16_netvlad_pca/cluster_centers"][0, 0, 0]  # [D, K]
    vlad = np.einsum("nhwk,nhwdk->ndk", a, x[..., None] + c)  # sum over locations of a * (x + C)
    vlad = _matconvnet_normalize(vlad.transpose(0, 2, 1)).transpose(0, 2, 1)  # intra, over D
    vlad = _matconvnet_normalize(vlad.reshape(len(x), -1))  # flatten [D, K]: index d * K + k
    if "vgg16_netvlad_pca/WPCA/kernel" in v:
        vlad = vlad @ v["vgg16_netvlad_pca/WPCA/kernel"][0, 0] + v["vgg16_netvlad_pca/WPCA/bias"]
        return _matconvnet_normalize(vlad)
    return vlad.reshape(len(x), D, K).transpose(0, 2, 1).reshape(len(x), -1)


def _images(count, seed, size=(48, 64)):
    rng = np.random.default_rng(seed)
    smooth = rng.random((count, size[0] // 8, size[1] // 8, 3))
    return np.clip(
        np.kron(smooth, np.ones((1, 8, 8, 1))) * 255 + rng.normal(0, 12, (count, *size, 3)), 0, 255
    )


def _cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_permutation_maps_dimension_major_rows_to_cluster_major():
    kernel = np.arange(D * K * 2, dtype=np.float64).reshape(D * K, 2)
    permuted = wpca_rows_to_cluster_major(kernel, D, K)
    for d in range(D):
        for k in range(K):
            np.testing.assert_array_equal(permuted[k * D + d], kernel[d * K + k])


@pytest.mark.parametrize("wpca", [True, False], ids=["whitened", "plain"])
def test_imported_checkpoint_matches_the_netvlad_tf_graph(tmp_path, wpca):
    variables = _variables(seed=1, wpca=wpca)
    folder = tmp_path / "vd16_pitts30k_conv5_3_vlad_preL2_intra_white"
    folder.mkdir()
    prefix = str(folder / "vd16_pitts30k_conv5_3_vlad_preL2_intra_white")
    _save_checkpoint(variables, prefix)
    assert os.path.isfile(f"{prefix}.index")
    sidecar = import_checkpoint(folder, tmp_path / "netvlad.keras", trained_on="Pittsburgh 30k")
    assert sidecar["format"] == "netvlad-tf"
    assert sidecar["model"]["descriptor_dim"] == (P if wpca else D * K)
    model = keras.saving.load_model(tmp_path / "netvlad.keras", compile=False)
    batch = _images(6, seed=2)
    got = keras.ops.convert_to_numpy(model(batch.astype(np.float32)))
    want = reference(variables, batch)
    assert _cosines(got, want).min() >= 0.9999
    between = want @ want.T / np.outer(np.linalg.norm(want, axis=1), np.linalg.norm(want, axis=1))
    assert between[np.triu_indices(6, 1)].max() < 0.99
    database, queries = _images(12, seed=3), _images(3, seed=4)
    top_got = np.argsort(-(model(queries).numpy() @ model(database).numpy().T), axis=1)[:, :10]
    top_want = np.argsort(-(reference(variables, queries) @ reference(variables, database).T), 1)
    np.testing.assert_array_equal(top_got, top_want[:, :10])
    # The same path given as the prefix or as one of its files.
    for path in (prefix, f"{prefix}.index"):
        import_checkpoint(path, tmp_path / "again.keras")
    if wpca:  # without the permutation the whitened descriptors would be wrong
        pca = model.get_layer("pca_whitening")
        unpermuted = variables["vgg16_netvlad_pca/WPCA/kernel"][0, 0]
        pca.projection.assign(unpermuted)
        wrong = keras.ops.convert_to_numpy(model(batch.astype(np.float32)))
        assert _cosines(wrong, want).max() < 0.99


def test_the_imported_model_exports_with_its_pixel_normalisation(tmp_path):
    from sare_tf.export import export_saved_model

    prefix = str(tmp_path / "netvlad")
    _save_checkpoint(_variables(seed=5), prefix)
    import_checkpoint(prefix, tmp_path / "netvlad.keras")
    model = keras.saving.load_model(tmp_path / "netvlad.keras", compile=False)
    export_saved_model(model, str(tmp_path / "export"))
    served = tf.saved_model.load(str(tmp_path / "export"))
    batch = _images(2, seed=6).astype(np.float32)
    got = served.signatures["serving_default"](image=tf.constant(batch))["descriptor"].numpy()
    np.testing.assert_allclose(got, model(batch).numpy(), atol=1e-5)


def test_bad_checkpoints_are_refused_by_name(tmp_path):
    variables = _variables(seed=7)
    cases = {
        "missing": ({k: v for k, v in variables.items() if "cluster_centers" not in k},
                    "no 'vgg16_netvlad_pca/cluster_centers'"),
        "shape": ({**variables, "vgg16_netvlad_pca/conv2_1/kernel": np.zeros((3, 3, 5, 6), np.float32)},
                  r"'vgg16_netvlad_pca/conv2_1/kernel' has shape \(3, 3, 5, 6\)"),
        "extra": ({**variables, "vgg16_netvlad_pca/extra": np.zeros(2, np.float32)},
                  "unexpected keys .*vgg16_netvlad_pca/extra"),
    }  # fmt: skip
    for name, (broken, message) in cases.items():
        prefix = str(tmp_path / name)
        _save_checkpoint(broken, prefix)
        with pytest.raises(ValueError, match=message):
            import_checkpoint(prefix, tmp_path / f"{name}.keras", format="netvlad-tf")
        assert not (tmp_path / f"{name}.keras").exists()
    prefix = str(tmp_path / "truncated")
    _save_checkpoint(variables, prefix)
    data = f"{prefix}.data-00000-of-00001"
    with open(data, "r+b") as handle:
        handle.truncate(os.path.getsize(data) // 2)
    with pytest.raises(ValueError, match="truncated: not a readable TensorFlow checkpoint"):
        import_checkpoint(prefix, tmp_path / "t.keras")
    with pytest.raises(FileNotFoundError, match="No TensorFlow checkpoint"):
        import_checkpoint(tmp_path / "nothing.index", tmp_path / "n.keras")
    assert not list(tmp_path.glob("*.keras"))
