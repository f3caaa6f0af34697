"""torchvision's ResNets in Keras: the same numbers as the torch modules on random weights."""

from __future__ import annotations

import numpy as np
import pytest

from sare_tf.convert.resnet_gem import load_resnet_weights, resnet_layer_weights
from sare_tf.layers import GeM
from sare_tf.model import PlaceEmbedding
from sare_tf.model.torchvision_resnet import keras_layer_name, stage_output_name

torch = pytest.importorskip("torch")

from sare_tf.bench.torch_models import build_resnet, resnet_features, torch_forward  # noqa: E402


def _keras_backbone(depth: int, torch_backbone):
    state = {f"backbone.{k}": v.numpy() for k, v in torch_backbone.state_dict().items()}
    model = PlaceEmbedding(f"resnet{depth}", aggregator=GeM(8, name="gem"), trainable_from=None)
    load_resnet_weights(model, resnet_layer_weights(state, "backbone."), "test")
    return model.feature_model()


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("size", [(64, 64), (70, 98)], ids=["square", "odd-non-square"])
def test_layer4_equals_torchvision_on_random_weights(depth, size):
    backbone = resnet_features(torch, build_resnet(torch, depth, seed=depth))
    images = np.random.default_rng(1).uniform(0, 255, (2, *size, 3)).astype(np.float32)
    want = torch_forward(torch, backbone, images)
    got = np.asarray(_keras_backbone(depth, backbone)(images))
    assert got.shape == want.shape  # odd sizes: the same floor rounding of every stride
    # float32 precision: error / largest activation ~1e-6 (measured 3.7e-7 and 6.1e-7)
    assert np.abs(got - want).max() <= 5e-6 * np.abs(want).max()


def test_layer_names_follow_torchvision_module_paths():
    assert keras_layer_name("layer3.0.downsample.1") == "layer3_0_downsample_1"
    assert stage_output_name(50, 4) == "layer4_2_out" and stage_output_name(18, 3) == "layer3_1_out"
    model = PlaceEmbedding("resnet50", aggregator=GeM(name="gem"), input_shape=(64, 64, 3))
    names = {layer.name for layer in model.layers}
    assert {"conv1", "bn1", "layer1_0_conv3", "layer2_0_downsample_0", "layer4_2_bn3"} <= names
    # no bias anywhere, BatchNorm epsilon 1e-5 (keras.applications: biases, 1.001e-5)
    assert all(
        not getattr(layer, "use_bias", False) for layer in model.layers if "conv" in layer.name
    )
    assert {layer.epsilon for layer in model.layers if hasattr(layer, "moving_mean")} == {1e-5}
    assert model.descriptor_size == 2048 and model.trainable_from == "layer3_0_conv1"


def test_imagenet_weights_are_refused_with_the_route_to_take():
    with pytest.raises(ValueError, match="sare-tf import"):
        PlaceEmbedding("resnet18", aggregator=GeM(name="gem"), weights="imagenet")


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_saved_and_reloaded_gives_the_same_descriptors(tmp_path, backbone):
    import keras

    model = PlaceEmbedding(backbone, aggregator=GeM(12, name="gem"))
    model.image_size = (64, 96)
    images = np.random.default_rng(2).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert isinstance(reloaded, PlaceEmbedding) and reloaded.backbone_name == backbone
    assert reloaded.image_size == (64, 96) and reloaded.aggregator_name == "gem"
    np.testing.assert_array_equal(np.asarray(reloaded(images)), np.asarray(model(images)))
