"""CosPlace / EigenPlaces releases (ResNet + GeM + FC), written by real torch.save from their
GeoLocalizationNet rebuilt in torch, imported without torch and checked against its forward pass."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sare_tf.artifacts import load_descriptor_model  # noqa: E402
from sare_tf.bench.torch_models import build_geolocalization_net, torch_forward  # noqa: E402
from sare_tf.cli import main  # noqa: E402
from sare_tf.convert import import_checkpoint  # noqa: E402


def _centre_the_projection(net, size):
    """Random ResNets map every image near one GeM vector; a bias that removes the mean
    projection (as training would) makes the descriptors of different images differ."""
    pixels = torch.from_numpy(
        ((_images(8, size, seed=9) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
        .transpose(0, 3, 1, 2).astype(np.float32)
    )  # fmt: skip
    with torch.no_grad():
        pooled = net.aggregation[:3](net.backbone(pixels))
        linear = net.aggregation[3]
        linear.weight.mul_(50.0)
        linear.bias.copy_(-(pooled @ linear.weight.T).mean(dim=0))


def _release(tmp_path, depth=18, dim=32, seed=0, name=None, size=(96, 128)):
    net = build_geolocalization_net(torch, depth, dim, seed=seed)
    _centre_the_projection(net, size)
    path = tmp_path / (name or f"ResNet{depth}_{dim}_cosplace.pth")
    torch.save(net.state_dict(), path)  # the release assets are plain state dicts
    return net, path


def _images(count, size, seed):
    rng = np.random.default_rng(seed)
    smooth = rng.random((count, size[0] // 16, size[1] // 16, 3))
    noise = rng.normal(0, 12, (count, *size, 3))
    return np.clip(np.kron(smooth, np.ones((1, 16, 16, 1))) * 255 + noise, 0, 255).astype(
        np.float32
    )


def _assert_same_descriptors_and_retrieval(model, net, size):
    queries, database = _images(3, size, seed=1), _images(12, size, seed=2)
    got_q, got_db = (
        np.asarray(model(queries)),
        np.asarray(model.predict(database, batch_size=4, verbose=0)),
    )
    want_q, want_db = torch_forward(torch, net, queries), torch_forward(torch, net, database)
    cosine = np.sum(got_q * want_q, axis=1)  # both unit-norm
    assert cosine.min() >= 0.9999, cosine
    assert (want_db @ want_db.T)[np.triu_indices(12, 1)].max() < 0.99  # not lookalikes
    top_got = np.argsort(-(got_q @ got_db.T), axis=1)[:, :10]
    top_want = np.argsort(-(want_q @ want_db.T), axis=1)[:, :10]
    np.testing.assert_array_equal(top_got, top_want)


@pytest.mark.slow
def test_cosplace_resnet18_at_its_resolution_and_a_non_square_one(tmp_path):
    net, path = _release(tmp_path, 18, 32, size=(240, 320))
    sidecar = import_checkpoint(path, tmp_path / "cosplace.keras", image_size=(512, 512))
    assert sidecar["format"] == "cosplace/eigenplaces"
    assert sidecar["model"]["backbone"] == "resnet18" and sidecar["model"]["aggregator"] == "gem"
    assert sidecar["model"]["descriptor_dim"] == 32 and sidecar["model"]["image_size"] == [512, 512]
    model = keras.saving.load_model(tmp_path / "cosplace.keras", compile=False)
    _assert_same_descriptors_and_retrieval(model, net, (512, 512))  # CosPlace trains at 512x512
    _assert_same_descriptors_and_retrieval(model, net, (240, 320))


@pytest.mark.slow
def test_eigenplaces_resnet50_through_the_command_line(tmp_path, capsys):
    net, path = _release(tmp_path, 50, 16, seed=3, name="ResNet50_16_eigenplaces.pth")
    out = tmp_path / "eigen.keras"
    assert main(["import", str(path), "--out", str(out), "--format", "eigenplaces",
                 "--image-size", "96", "128", "--trained-on", "SF-XL"]) == 0  # fmt: skip
    sidecar = json.loads((tmp_path / "eigen.keras.json").read_text())
    assert sidecar["format"] == "eigenplaces" and sidecar["trained_on"] == "SF-XL"
    loaded = load_descriptor_model(out)
    assert loaded.image_size == (96, 128) and loaded.model.backbone_name == "resnet50"
    _assert_same_descriptors_and_retrieval(loaded.model, net, (96, 128))
    _assert_same_descriptors_and_retrieval(loaded.model, net, (80, 64))


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("backbone.6.1.conv2.weight"), r"no tensors for backbone layers \['layer3_1_conv2'\]"),
        (lambda s: s.update({"aggregation.3.weight": s["aggregation.3.weight"][:, :100]}),
         "takes 100 channels; resnet18's layer4 gives 512"),
        (lambda s: s.update({"aggregation.9.weight": torch.zeros(2)}), r"unexpected keys .*aggregation\.9\.weight"),
        (lambda s: s.update({"backbone.5.0.bn1.weight": torch.zeros(7)}), r"layer2\.0\.bn1 has tensors of shapes"),
        (lambda s: s.pop("aggregation.1.p"), "not a cosplace checkpoint"),
    ],
    ids=["missing", "fc-mis-shaped", "unexpected", "bn-mis-shaped", "no-gem"],
)  # fmt: skip
def test_missing_unexpected_and_mis_shaped_keys_are_named(tmp_path, change, message):
    net = build_geolocalization_net(torch, 18, 8)
    state = _state(net)
    change(state)
    path = tmp_path / "ResNet18_8_cosplace.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message):
        import_checkpoint(path, tmp_path / "bad.keras", format="cosplace")
    assert not (tmp_path / "bad.keras").exists()
