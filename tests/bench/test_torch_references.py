"""The PyTorch modules the extraction and training benchmarks time sare_tf against compute what
sare_tf computes: same weights in, same descriptors, feature maps and loss out. A speed ratio to
a different computation would mean nothing."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import keras  # noqa: E402

from sare_tf.bench import torch_models  # noqa: E402
from sare_tf.convert import import_checkpoint  # noqa: E402
from sare_tf.losses import GaussianSARE  # noqa: E402
from sare_tf.model import PlaceEmbedding  # noqa: E402


def _pixels(seed, shape=(2, 64, 80, 3)):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def test_vgg16_netvlad_reference_gives_the_imported_models_descriptors(tmp_path):
    features, pool = torch_models.build_embedding(torch, "vgg16", num_clusters=8, seed=3)
    model = torch.nn.Module()
    model.add_module("encoder", features)
    model.add_module("pool", pool)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, path)  # pytorch-NetVlad's layout
    import_checkpoint(path, tmp_path / "imported.keras", trained_on="tests")
    imported = keras.saving.load_model(tmp_path / "imported.keras", compile=False)

    images = _pixels(0)
    with torch.inference_mode():
        x = torch_models.imagenet_normalize(torch, torch.from_numpy(images.transpose(0, 3, 1, 2)))
        expected = pool(features(x)).numpy()
    got = np.asarray(imported(images))
    assert got.shape == expected.shape == (2, 8 * 512)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def _copy_tiny_weights(keras_backbone, torch_tiny) -> None:
    """sare_tf's tiny weights into the torch module, layer by layer in order."""
    convs = [layer for layer in keras_backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [
        layer
        for layer in keras_backbone.layers
        if isinstance(layer, keras.layers.GroupNormalization)
    ]
    torch_convs = [m for m in torch_tiny if isinstance(m, torch.nn.Conv2d)]
    torch_norms = [m for m in torch_tiny if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) == len(torch_convs) == 8 and len(norms) == len(torch_norms) == 8
    with torch.no_grad():
        for conv, target in zip(convs, torch_convs, strict=True):
            kernel = conv.kernel.numpy().transpose(3, 2, 0, 1)
            target.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
        for norm, target in zip(norms, torch_norms, strict=True):
            target.weight.copy_(torch.from_numpy(norm.gamma.numpy()))
            if norm.center:
                target.bias.copy_(torch.from_numpy(norm.beta.numpy()))


def test_tiny_reference_gives_sare_tfs_feature_map():
    keras.utils.set_random_seed(5)
    model = PlaceEmbedding("tiny", input_shape=(None, None, 3))
    backbone = keras.Model(model.preprocessing.output, model.aggregator.input)
    rng = np.random.default_rng(1)
    for layer in backbone.layers:  # non-trivial norms: gamma and beta away from 1 and 0
        if isinstance(layer, keras.layers.GroupNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape))
    torch_tiny = torch_models.build_tiny(torch).eval()
    _copy_tiny_weights(backbone, torch_tiny)

    x = rng.normal(size=(2, 48, 64, 3)).astype("float32")
    with torch.inference_mode():
        expected = torch_tiny(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(backbone(x)).transpose(0, 3, 1, 2)
    assert got.shape == expected.shape == (2, 128, 6, 8)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_torch_joint_sare_equals_sare_tfs_loss():
    descriptors = np.random.default_rng(2).normal(size=(3, 2 + 4, 16))
    descriptors /= np.linalg.norm(descriptors, axis=-1, keepdims=True)
    expected = float(GaussianSARE(negatives="joint")(None, descriptors.astype("float32")))
    got = float(torch_models.sare_joint_loss(torch, torch.from_numpy(descriptors)))
    # and by hand, per tuple: log(1 + sum_i exp(dp - dn_i))
    q, p, n = descriptors[:, 0], descriptors[:, 1], descriptors[:, 2:]
    dp = ((q - p) ** 2).sum(-1)
    dn = ((q[:, None] - n) ** 2).sum(-1)
    by_hand = np.mean(np.log1p(np.exp(dp[:, None] - dn).sum(-1)))
    assert got == pytest.approx(by_hand, abs=1e-12)
    assert expected == pytest.approx(by_hand, abs=1e-6)


def test_vgg16_reference_freezes_what_sare_tf_freezes():
    features = torch_models.build_vgg16_conv5_3(torch)
    torch_models.vgg16_trainable_from_conv5(torch, features)
    trainable = [i for i, m in enumerate(features) if any(p.requires_grad for p in m.parameters())]
    assert trainable == [24, 26, 28]  # conv5_1..conv5_3
    model = PlaceEmbedding("vgg16", input_shape=(None, None, 3))
    keras_trainable = [layer.name for layer in model.layers if layer.trainable_weights]
    assert keras_trainable == ["block5_conv1", "block5_conv2", "block5_conv3", "netvlad"]
