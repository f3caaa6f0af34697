"""hloc's struct `.mat` of the NetVLAD authors' model, written by scipy in that layout from the
same weights as netvlad_tf_open's checkpoint test, checked against the MatConvNet graph's numpy
forward pass."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.io
from test_netvlad_tf import TF_CONV_NAMES, _images, _variables, reference

from sare_tf.convert import import_checkpoint
from sare_tf.convert.hloc_netvlad import CONV_POSITIONS, NETVLAD_POSITION, WHITENING_POSITION

SCOPE = "vgg16_netvlad_pca/"


def _layer(kind, *weights):
    cell = np.empty(len(weights), dtype=object)
    for index, weight in enumerate(weights):
        cell[index] = np.asarray(weight, np.float64)
    return {"type": kind, "name": kind, "weights": cell}


def _struct_net(variables, average_image, whitening=True) -> dict:
    """`net` as net_class2struct leaves it: one struct per layer (conv / relu / pool, then the
    NetVLAD layers), weights in cells."""
    layers = [_layer("relu") for _ in range(35)]
    for position, name in zip(CONV_POSITIONS, TF_CONV_NAMES, strict=True):
        layers[position] = _layer(
            "conv", variables[f"{SCOPE}{name}/kernel"], variables[f"{SCOPE}{name}/bias"]
        )
    for position in (4, 9, 16, 23):
        layers[position] = _layer("pool")
    layers[29] = _layer("normalize")
    layers[NETVLAD_POSITION] = _layer(
        "netvlad",
        variables[f"{SCOPE}assignment/kernel"][0, 0],
        variables[f"{SCOPE}cluster_centers"][0, 0, 0],
    )
    if whitening:
        layers[WHITENING_POSITION] = _layer(
            "conv", variables[f"{SCOPE}WPCA/kernel"], variables[f"{SCOPE}WPCA/bias"]
        )
    cells = np.empty(len(layers), dtype=object)
    for index, layer in enumerate(layers):
        cells[index] = layer
    return {"layers": cells, "meta": {"normalization": {"averageImage": average_image}}}


@pytest.mark.parametrize("whitening", [True, False], ids=["whitened", "plain"])
@pytest.mark.parametrize("average", ["1x1x3", "image"])
def test_hloc_struct_mat_matches_the_matconvnet_graph(tmp_path, whitening, average):
    variables = _variables(seed=5, wpca=whitening)
    rgb = variables[f"{SCOPE}average_rgb"].astype(np.float64)
    average_image = rgb[None, None] if average == "1x1x3" else np.tile(rgb, (4, 5, 1))
    path = tmp_path / "Pitts30K_struct.mat"
    scipy.io.savemat(path, {"net": _struct_net(variables, average_image, whitening)})
    sidecar = import_checkpoint(path, tmp_path / "hloc.keras", trained_on="Pittsburgh 30k")
    assert sidecar["format"] == "hloc-netvlad"
    model = keras.saving.load_model(tmp_path / "hloc.keras", compile=False)
    images = _images(15, seed=6)
    got = keras.ops.convert_to_numpy(model(images.astype(np.float32)))
    want = reference(variables, images)
    cosine = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999
    assert (want[3:] @ want[3:].T / np.outer(*2 * [np.linalg.norm(want[3:], axis=1)]))[
        np.triu_indices(12, 1)
    ].max() < 0.999
    top_got = np.argsort(-(got[:3] @ got[3:].T), axis=1)[:, :10]
    np.testing.assert_array_equal(top_got, np.argsort(-(want[:3] @ want[3:].T), axis=1)[:, :10])


def test_a_wrong_layer_is_named_and_an_unreadable_mat_gets_the_route(tmp_path):
    variables = _variables(seed=5)
    net = _struct_net(variables, variables[f"{SCOPE}average_rgb"][None, None].astype(np.float64))
    net["layers"][5] = _layer("conv", np.zeros((3, 3, 7, 6)), np.zeros(6))
    scipy.io.savemat(tmp_path / "bad.mat", {"net": net})
    with pytest.raises(
        ValueError, match=r"net\.layers\[5\]\.weights\[0\] has shape \(3, 3, 7, 6\)"
    ):
        import_checkpoint(tmp_path / "bad.mat", tmp_path / "bad.keras")
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.zeros(3)})
    with pytest.raises(ValueError, match="classdef .*Pitts30K_struct.mat"):
        import_checkpoint(tmp_path / "other.mat", tmp_path / "bad.keras")
    assert not list(tmp_path.glob("*.keras"))
