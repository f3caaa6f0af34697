"""Bag-of-Queries: the aggregator against torch's own attention modules, and both releases
(ResNet-50 and DINOv2) written by real torch.save in the released layout, imported without torch."""

from __future__ import annotations

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sare_tf.bench.torch_models import (  # noqa: E402
    build_boq,
    build_dinov2_vit,
    build_resnet,
    calibrate_batchnorm,
    resnet_features,
    torch_forward,
)
from sare_tf.convert import import_checkpoint  # noqa: E402
from sare_tf.convert.boq import boq_settings, set_boq_weights  # noqa: E402
from sare_tf.layers import BoQ  # noqa: E402


def _state(module, prefix):
    return {prefix + k: v.detach().numpy() for k, v in module.state_dict().items()}


def test_boq_layer_equals_the_torch_modules():
    torch_boq = build_boq(
        torch, in_channels=32, proj_channels=128, num_queries=8, num_layers=2, row_dim=4
    )
    state = _state(torch_boq, "aggregator.")
    settings = boq_settings(state, "test")
    assert settings == {"proj_channels": 128, "num_queries": 8, "num_layers": 2, "row_dim": 4}
    layer = BoQ(**settings)
    layer.build((None, None, None, 32))
    set_boq_weights(layer, state, "test")
    features = np.random.default_rng(0).normal(size=(3, 5, 7, 32)).astype(np.float32)
    with torch.inference_mode():
        want = torch_boq(torch.from_numpy(features.transpose(0, 3, 1, 2))).numpy()
    got = keras.ops.convert_to_numpy(layer(features))
    assert got.shape == (3, 512) and layer.num_heads == 2
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert (want @ want.T)[np.triu_indices(3, 1)].max() < 0.99


class _Release(torch.nn.Module):
    """BoQ's VPRModel: `backbone` (ResNet `net` or DINOv2 `dino`) then `aggregator`."""

    def __init__(self, backbone_name, backbone, aggregator):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.add_module(backbone_name, backbone)
        self.aggregator = aggregator
        self.kind = backbone_name

    def forward(self, x):
        features = getattr(self.backbone, self.kind)(x)
        if self.kind == "dino":  # patch tokens before the final norm, as a map
            batch, _, height, width = x.shape
            features = (
                features[:, 1:].permute(0, 2, 1).reshape(batch, -1, height // 14, width // 14)
            )
        return self.aggregator(features)


def _images(size, count, seed=5):
    """Images that differ: each its own colour cast and pattern scale."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        cell = 4 + 3 * (index % 5)
        cast = rng.uniform(0.2, 1.0, 3)
        smooth = rng.random((size[0] // cell + 1, size[1] // cell + 1, 3)) * cast
        pattern = np.kron(smooth, np.ones((cell, cell, 1)))[: size[0], : size[1]]
        images.append(np.clip(pattern * 255 + rng.normal(0, 8, (*size, 3)), 0, 255))
    return np.asarray(images, np.float32)


def _check(model, release, size, count=12):
    """cosine >= 0.9999 and the same top-10 retrieval of 3 queries among `count` images whose
    descriptors differ."""
    images = _images(size, count + 3)
    want = torch_forward(torch, release, images)
    got = np.asarray(model.predict(images, batch_size=3, verbose=0))
    assert np.sum(got * want, axis=1).min() >= 0.9999
    database, queries = slice(3, None), slice(0, 3)
    similarity = want[database] @ want[database].T
    assert similarity[np.triu_indices(count, 1)].max() < 0.999, similarity  # not lookalikes
    top_got = np.argsort(-(got[queries] @ got[database].T), axis=1)[:, :10]
    top_want = np.argsort(-(want[queries] @ want[database].T), axis=1)[:, :10]
    np.testing.assert_array_equal(top_got, top_want)


@pytest.mark.slow
def test_boq_resnet50_release_at_384_and_non_square(tmp_path):
    backbone = torch.nn.Sequential(
        *list(resnet_features(torch, build_resnet(torch, 50, seed=2)))[:-1]
    )
    calibrate_batchnorm(torch, backbone, _images((128, 128), 16, seed=7))
    aggregator = build_boq(torch, 1024, 128, 8, 2, 4, seed=3)
    release = _Release("net", backbone, aggregator).eval()
    path = tmp_path / "resnet50_512.pth"
    torch.save(release.state_dict(), path)
    sidecar = import_checkpoint(path, tmp_path / "boq.keras", image_size=(384, 384))
    assert sidecar["format"] == "boq" and sidecar["model"]["backbone"] == "resnet50-layer3"
    assert sidecar["model"]["aggregator"] == "boq" and sidecar["model"]["descriptor_dim"] == 512
    model = keras.saving.load_model(tmp_path / "boq.keras", compile=False)
    _check(model, release, (384, 384))
    _check(model, release, (160, 224))


@pytest.mark.slow
def test_boq_dinov2_release_at_322_and_non_square(tmp_path):
    vit = build_dinov2_vit(torch, dim=384, depth=12, heads=6, seed=4)
    aggregator = build_boq(torch, 384, 128, 8, 2, 4, seed=6)
    release = _Release("dino", vit, aggregator).eval()
    path = tmp_path / "dinov2_512.pth"
    torch.save(release.state_dict(), path)
    sidecar = import_checkpoint(path, tmp_path / "boq.keras", image_size=(322, 322))
    assert sidecar["model"]["backbone"] == "dinov2-vits14"
    model = keras.saving.load_model(tmp_path / "boq.keras", compile=False)
    _check(model, release, (322, 322))
    _check(model, release, (224, 308))


def test_boq_keys_are_checked_by_name(tmp_path):
    backbone = torch.nn.Sequential(*list(resnet_features(torch, build_resnet(torch, 50)))[:-1])
    release = _Release("net", backbone, build_boq(torch, 1024, 128, 8, 2, 4))
    state = release.state_dict()
    state.pop("aggregator.boqs.1.cross_attn.in_proj_weight")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"no 'aggregator\.boqs\.1\.cross_attn\.in_proj_weight'"):
        import_checkpoint(tmp_path / "bad.pth", tmp_path / "bad.keras")
    state = release.state_dict()
    state["aggregator.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected keys .*aggregator\.extra\.weight"):
        import_checkpoint(tmp_path / "extra.pth", tmp_path / "bad.keras")
    assert not (tmp_path / "bad.keras").exists()
