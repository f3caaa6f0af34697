"""The VG benchmark's and OpenIBL's VGG16 + NetVLAD checkpoints, written by real torch.save in
their released layouts, read without torch, checked against the sources' forward pass."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_reference import (  # noqa: E402
    CHANNELS,
    NUM_CLUSTERS,
    PCA_DIM,
    as_float64,
    assert_matches,
    images,
    normalize,
    openibl_pixels,
    reference_descriptors,
    tiny_encoder_and_pool,
)

from sare_tf.convert import import_checkpoint  # noqa: E402

VLAD_DIM = NUM_CLUSTERS * CHANNELS


def _vg_benchmark_model(fc: bool, seed: int):
    encoder, pool = tiny_encoder_and_pool(torch, seed)
    model = torch.nn.Module()
    model.add_module("backbone", encoder)  # GeoLocalizationNet.backbone
    if fc:  # --fc_output_dim: Sequential(NetVLAD, Linear, L2Norm)
        model.add_module(
            "aggregation", torch.nn.Sequential(pool, torch.nn.Linear(VLAD_DIM, PCA_DIM))
        )
    else:
        model.add_module("aggregation", pool)
    return torch.nn.DataParallel(model)  # train.py wraps the model: keys start with module.


@pytest.mark.parametrize("fc", [False, True], ids=["netvlad", "netvlad-fc"])
def test_vg_benchmark_best_model(tmp_path, fc):
    model = _vg_benchmark_model(fc, seed=11)
    path = tmp_path / "best_model.pth"
    torch.save({"epoch_num": 9, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": torch.optim.Adam(model.parameters()).state_dict(),
                "recalls": np.array([83.2, 91.0]), "best_r5": 91.0, "not_improved_num": 2},
               path)  # fmt: skip
    state = {k.removeprefix("module."): v for k, v in as_float64(model.state_dict()).items()}
    sidecar = import_checkpoint(path, tmp_path / "vg.keras")
    assert sidecar["format"] == "vg-benchmark" and sidecar["checkpoint"]["best_r5"] == 91.0
    assert sidecar["model"]["descriptor_dim"] == (PCA_DIM if fc else VLAD_DIM)
    pool = "aggregation.0." if fc else "aggregation."
    projection = (state["aggregation.1.weight"], state["aggregation.1.bias"]) if fc else None
    imported = keras.saving.load_model(tmp_path / "vg.keras", compile=False)
    assert_matches(
        imported,
        lambda x: reference_descriptors(
            state, x, encoder="backbone.", pool=pool, projection=projection
        ),
    )


def _openibl_model(pca: bool, seed: int):
    encoder, pool = tiny_encoder_and_pool(torch, seed)
    base_model = torch.nn.Module()
    base_model.add_module("base", encoder)  # ibl.models.vgg.VGG.base
    model = torch.nn.Module()
    model.add_module("base_model", base_model)
    model.add_module("net_vlad", pool)
    if pca:  # EmbedNetPCA.pca_layer
        model.add_module("pca_layer", torch.nn.Conv2d(VLAD_DIM, PCA_DIM, 1, stride=1, padding=0))
    return model


def test_openibl_hub_release_with_its_pca_layer(tmp_path):
    model = _openibl_model(pca=True, seed=12)
    path = tmp_path / "vgg16_netvlad.pth"
    torch.save(model.state_dict(), path)  # hubconf loads it with load_state_dict
    state = as_float64(model.state_dict())
    sidecar = import_checkpoint(path, tmp_path / "openibl.keras")
    assert sidecar["format"] == "openibl" and sidecar["model"]["descriptor_dim"] == PCA_DIM
    imported = keras.saving.load_model(tmp_path / "openibl.keras", compile=False)
    projection = (state["pca_layer.weight"][:, :, 0, 0], state["pca_layer.bias"])
    assert_matches(
        imported,
        lambda x: reference_descriptors(
            state, x, openibl_pixels, "base_model.base.", "net_vlad.", projection
        ),
    )


def _relja_pca(vectors, path):
    """ibl/pca.py's PCA.train (relja_PCA.m, primal case) and its h5 file."""
    x = vectors.T
    mu = x.mean(axis=1, keepdims=True)
    centred = x - mu
    covariance = centred @ centred.T / (x.shape[1] - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(-eigenvalues)[:PCA_DIM]
    lams, u = np.maximum(eigenvalues[order], 1e-9), eigenvectors[:, order]
    with h5py.File(path, "w") as h5:
        h5.create_dataset("U", data=u)
        h5.create_dataset("lams", data=lams)
        h5.create_dataset("mu", data=mu)
        h5.create_dataset("Utmu", data=u.T @ mu)
    return u, lams, mu


def test_openibl_training_checkpoint_with_its_pca_file(tmp_path):
    model = _openibl_model(pca=False, seed=13)
    path = tmp_path / "model_best.pth.tar"
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}  # DistributedDataParallel
    torch.save({"state_dict": wrapped, "epoch": 4, "best_recall5": 0.964}, path)
    state = as_float64(model.state_dict())
    pixels_args = (openibl_pixels, "base_model.base.", "net_vlad.")
    vectors = reference_descriptors(state, images(40, seed=14), *pixels_args)
    u, lams, mu = _relja_pca(vectors, tmp_path / "pca_params_model_best.h5")
    sidecar = import_checkpoint(
        path, tmp_path / "openibl.keras", pca_file=tmp_path / "pca_params_model_best.h5",
        pca_dim=8,
    )  # fmt: skip
    assert sidecar["format"] == "openibl" and sidecar["checkpoint"]["epoch"] == 4
    assert sidecar["model"]["descriptor_dim"] == 8 and sidecar["checkpoint"]["pca_file_sha256"]
    # ibl/pca.py PCA.load + infer, in numpy: W = (U diag(lams^-1/2))^T, b = -W mu, then L2.
    weight = (u[:, :8] / np.sqrt(lams[:8])).T
    projection = (weight, -(weight @ mu).ravel())
    imported = keras.saving.load_model(tmp_path / "openibl.keras", compile=False)
    assert_matches(imported, lambda x: reference_descriptors(state, x, *pixels_args, projection))
    # Whitening makes the PCA'd training vectors decorrelated with equal variance.
    whitened = vectors @ weight.T + projection[1]
    np.testing.assert_allclose(np.cov(whitened.T), np.eye(8), atol=1e-6)
    assert normalize(whitened, -1).shape == (40, 8)


def test_wrong_layouts_are_refused_by_name(tmp_path):
    model = _openibl_model(pca=True, seed=15)
    path = tmp_path / "openibl.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="not a vg-benchmark checkpoint: .* openibl"):
        import_checkpoint(path, tmp_path / "a.keras", format="vg-benchmark")
    with pytest.raises(ValueError, match="already has its PCA layer"):
        import_checkpoint(path, tmp_path / "a.keras", pca_file=path)
    resnet = {"backbone.0.weight": torch.zeros(64, 3, 7, 7),
              "backbone.4.0.conv1.weight": torch.zeros(64, 64, 1, 1),
              "aggregation.centroids": torch.zeros(64, 256)}  # fmt: skip
    torch.save({"model_state_dict": resnet}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="ResNet"):
        import_checkpoint(tmp_path / "resnet.pth", tmp_path / "r.keras")
    gem = {"backbone.0.weight": torch.zeros(64, 3, 3, 3), "aggregation.0.p": torch.ones(1)}
    torch.save({"model_state_dict": gem}, tmp_path / "gem.pth")
    with pytest.raises(ValueError, match="GeM"):
        import_checkpoint(tmp_path / "gem.pth", tmp_path / "g.keras")
    (tmp_path / "net.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(ValueError, match="classdef .* --format netvlad-tf"):
        import_checkpoint(tmp_path / "net.mat", tmp_path / "m.keras")
    assert not list(tmp_path.glob("*.keras"))
