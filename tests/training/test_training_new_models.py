"""Every loss trains today's backbones and aggregators through the same recipe and mining."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from sare_tf.artifacts import load_descriptor_model
from sare_tf.model import build_embedding_model
from sare_tf.training import TrainConfig, train

IMAGE_SIZE = (64, 96)


def _config(tiny_city, out, **changes) -> TrainConfig:
    settings = dict(
        dataset=tiny_city["train"], out=str(out), image_size=IMAGE_SIZE, num_negatives=3,
        batch_size=4, epochs=2, lr=1e-4, optimizer="adam", weight_decay=0.0, num_candidates=50,
        cluster_images=16, precision="float32", tensorboard=False, verbose=0, seed=0,
    )  # fmt: skip
    settings.update(changes)
    return TrainConfig(**settings)


COMBINATIONS = [
    ("resnet18", "gem", 32, (64, 96), 32),
    ("resnet18", "boq", None, (64, 96), 512 * 32),
    ("dinov2-vits14", "gem", 32, (70, 98), 32),
    ("dinov2-vits14", "boq", None, (70, 98), 384 * 32),
    ("tiny", "crn-netvlad", None, (64, 96), 64 * 128),  # NetVLAD + CRN, clusters initialised
    ("dinov2-vits14-tokens", "salad", 64, (126, 126), 64),  # 81 patches > 64 clusters
]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sare-joint", "sare-ind"])
@pytest.mark.parametrize(
    "backbone, aggregator, fc_dim, image_size, descriptor_size",
    COMBINATIONS,
    ids=[f"{b}-{a}" for b, a, *_ in COMBINATIONS],
)
def test_sare_trains_each_new_combination(
    tiny_city, tmp_path, loss, backbone, aggregator, fc_dim, image_size, descriptor_size
):
    config = _config(
        tiny_city, tmp_path / loss, loss=loss, backbone=backbone, aggregator=aggregator,
        fc_dim=fc_dim, image_size=image_size,
    )  # fmt: skip
    summary = train(config)
    losses = [epoch["loss"] for epoch in summary["epochs"]]
    print(backbone, aggregator, loss, losses)
    assert summary["model"]["backbone"] == backbone
    assert summary["model"]["aggregator"] == aggregator
    uniform = np.log(1 + 3) if loss == "sare-joint" else np.log(2)
    assert losses[-1] < losses[0] and losses[-1] < uniform
    loaded = load_descriptor_model(tmp_path / loss / summary["paths"]["last_model"])
    assert loaded.model.descriptor_size == descriptor_size and loaded.image_size == image_size


@pytest.mark.slow
def test_frozen_batchnorm_keeps_its_statistics_and_trained_batchnorm_learns_them(
    tiny_city, tmp_path
):
    """The choice, stated: a frozen layer's BatchNorm runs in inference mode (Keras's rule, and
    what small fine-tuning batches need); PyTorch's `requires_grad=False` would still update its
    running statistics in `model.train()`. Trainable stages use and update batch statistics."""
    model = build_embedding_model("resnet18", aggregator="gem", fc_dim=16)
    assert model.trainable_from == "layer3_0_conv1"  # CosPlace's default: layer3 on trains
    before = {layer.name: layer.moving_mean.numpy().copy() for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization)}  # fmt: skip
    train(_config(tiny_city, tmp_path / "run", epochs=1), embedding_model=model)
    changed = {
        name for name, mean in before.items()
        if not np.array_equal(model.get_layer(name).moving_mean.numpy(), mean)
    }  # fmt: skip
    assert changed == {name for name in before if name.startswith(("layer3", "layer4"))}
