"""The recipe's small parts: LR schedule, config, CLI mapping, atomic writes, TensorBoard
scalars, the refresh interval, and a diverging run stopped with a clear message."""

from __future__ import annotations

import argparse
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.atomic import save_model_atomic, write_json_atomic
from sare_tf.commands import train as train_command
from sare_tf.data import GeoDataset
from sare_tf.data.tuples import MiningState, TuplePipeline
from sare_tf.mining import HardNegativeMining
from sare_tf.models import build_embedding_model, build_tuple_model
from sare_tf.training import (
    BestModelCheckpoint,
    RunSummary,
    TensorBoardScalars,
    TrainConfig,
    TrainingDivergedError,
    halving_schedule,
    train,
)


def test_learning_rate_is_halved_every_five_epochs():
    schedule = halving_schedule(1e-3, 5)
    expected = [1e-3] * 5 + [5e-4] * 5 + [2.5e-4] * 5 + [1.25e-4]
    np.testing.assert_allclose([schedule(e) for e in range(16)], expected, rtol=1e-12)
    assert halving_schedule(0.1, 0)(29) == 0.1
    with pytest.raises(ValueError, match="halve_every"):
        halving_schedule(1e-3, -1)


def test_cli_defaults_are_the_papers_recipe():
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    config = train_command.config_from_args(parser.parse_args(["--dataset", "train.mat"]))
    assert config.to_dict() == TrainConfig(dataset="train.mat", out="runs/train").to_dict()
    paper = dict(
        loss="sare-joint", epochs=30, batch_size=4, num_negatives=10, lr=1e-3,
        lr_halve_every=5, weight_decay=1e-3, momentum=0.9, image_size=(480, 640),
        num_candidates=1000, refresh_every=1000, num_clusters=64, backbone="vgg16",
    )  # fmt: skip
    # Model settings left open resolve to the paper's model unless an initial model gives its own.
    from sare_tf.training import config as config_module

    resolved = {
        "image_size": config.image_size or config_module.DEFAULT_IMAGE_SIZE,
        "num_clusters": config.num_clusters or config_module.DEFAULT_NUM_CLUSTERS,
        "backbone": config.backbone or config_module.DEFAULT_BACKBONE,
    }
    assert {key: resolved.get(key, getattr(config, key)) for key in paper} == paper
    flags = parser.parse_args(
        ["--dataset", "d", "--image-size", "96", "128", "--trainable-from", "all",
         "--backup-every", "0", "--no-tensorboard", "--quiet", "--strategy", "mirrored"]
    )  # fmt: skip
    config = train_command.config_from_args(flags)
    assert config.image_size == (96, 128) and config.trainable_from is None
    assert config.backup_every is None and not config.tensorboard and config.verbose == 0
    assert config.strategy == "mirrored"
    json.dumps(config.to_dict())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image_size": (480,)}, "image_size"),
        ({"strategy": "tpu"}, "Unknown strategy"),
        ({"epochs": -1}, "epochs"),  # 0 is allowed: initialise only
        ({"lr": 0.0}, "lr"),
        ({"momentum": -0.1}, "momentum"),
        ({"backup_every": 0}, "backup_every"),
        ({"select_by": "recall@2"}, "Unknown selection metric"),
    ],
)
def test_bad_config_values_raise(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(dataset="d", **change)


def test_json_is_replaced_atomically_and_nan_becomes_null(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"loss": float("nan"), "x": np.float32(0.5), "v": [np.inf, 2.0]})
    assert json.loads(path.read_text()) == {"loss": None, "x": 0.5, "v": [None, 2.0]}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_model_save_failure_keeps_the_previous_file(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "best.keras"
    save_model_atomic(model, path)
    first = path.read_bytes()

    class Exploding(keras.Model):
        def save(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_model_atomic(Exploding(), path)
    assert path.read_bytes() == first and os.listdir(tmp_path) == ["best.keras"]
    with pytest.raises(ValueError, match=".keras"):
        save_model_atomic(model, tmp_path / "best.h5")


@pytest.mark.parametrize("select_by, best_epoch", [("recall@5", 1), ("recall@1", 3)])
def test_best_model_is_the_best_epoch_of_the_chosen_metric(tmp_path, capsys, select_by, best_epoch):
    # Recall@5 and Recall@1 disagree on which epoch is best (as on a small validation split).
    history = [(0.55, 0.82), (0.53, 0.66), (0.64, 0.80)]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="embedding")
    monitor = f"val_{select_by}"
    checkpoint = BestModelCheckpoint(
        tmp_path / "best.keras", monitor=monitor, embedding_model=model
    )
    summary = {"epochs": [], "best": None}
    recorder = RunSummary(tmp_path / "summary.json", summary, None, None, checkpoint)
    saved = {}
    for epoch, (recall_1, recall_5) in enumerate(history):
        model.layers[0].kernel.assign(np.full((3, 2), float(epoch), np.float32))
        logs = {"loss": 1.0, "val_recall@1": recall_1, "val_recall@5": recall_5}
        recorder.on_epoch_begin(epoch)
        checkpoint.on_epoch_end(epoch, logs)
        recorder.on_epoch_end(epoch, logs)
        saved[epoch + 1] = float(keras.models.load_model(tmp_path / "best.keras").weights[0][0, 0])
    assert checkpoint.best_epoch == best_epoch and saved[3] == best_epoch - 1
    best = json.loads((tmp_path / "summary.json").read_text())["best"]
    expected = {"recall@5": 0.82, "recall@1": 0.64}[select_by]
    assert best["epoch"] == best_epoch and best["monitor"] == monitor
    assert best[monitor] == pytest.approx(expected)
    # The train command's closing lines name the metric that picked the model.
    train_command.report({"status": "completed", "epochs": [], "best": best}, str(tmp_path))
    metric = select_by.replace("recall", "R")
    assert f"(epoch {best_epoch}, {metric} {100 * expected:.1f}%)" in capsys.readouterr().out


def test_tensorboard_scalars_are_readable_without_the_tensorboard_package(tmp_path):
    callback = TensorBoardScalars(tmp_path)
    callback.on_epoch_end(0, {"loss": 0.75, "val_recall@5": 0.5})
    callback.on_epoch_end(1, {"loss": 0.25, "val_recall@5": 0.625})
    callback.on_train_end()
    found = {}
    for split in ("train", "validation"):
        for name in os.listdir(tmp_path / split):
            for event in tf.compat.v1.train.summary_iterator(str(tmp_path / split / name)):
                for value in event.summary.value:
                    assert value.metadata.plugin_data.plugin_name == "scalars"
                    found[(split, value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    assert found == {
        ("train", "epoch_loss", 0): 0.75,
        ("train", "epoch_loss", 1): 0.25,
        ("validation", "epoch_recall@5", 0): 0.5,
        ("validation", "epoch_recall@5", 1): 0.625,
    }


def test_refresh_interval_grows_as_the_learning_rate_drops(tiny_city):
    train_data = GeoDataset.from_dbstruct(tiny_city["train"])
    model = build_tuple_model(build_embedding_model("tiny", num_clusters=2), 2)
    model.compile(keras.optimizers.SGD(1e-3), loss="mse")
    state = MiningState(train_data.num_queries, 2)
    pipeline = TuplePipeline(train_data, state, (32, 32))
    mining = HardNegativeMining(pipeline, refresh_every=1000, grow_with_lr=True, initial_lr=1e-3)
    mining.set_model(model)
    assert mining.current_interval() == 1000
    model.optimizer.learning_rate = 2.5e-4
    assert mining.current_interval() == 4000
    mining.grow_with_lr = False
    assert mining.current_interval() == 1000
    with pytest.raises(ValueError, match="mode"):
        HardNegativeMining(pipeline, policy="lazy")
    with pytest.raises(ValueError, match="24 queries"):
        TuplePipeline(train_data, MiningState(5, 2), (32, 32))
    # The settings travel as one object; keyword arguments replace its fields.
    from sare_tf.mining import MiningSettings

    settings = MiningSettings(refresh_every=500, num_candidates=40, seed=7)
    by_object = HardNegativeMining(pipeline, settings, verbose=0)
    assert (by_object.refresh_every, by_object.num_candidates, by_object.seed) == (500, 40, 7)
    replaced = HardNegativeMining(pipeline, settings, refresh_every=250, verbose=0)
    assert (replaced.refresh_every, replaced.num_candidates) == (250, 40)
    with pytest.raises(ValueError, match="refresh_every=0"):
        MiningSettings(refresh_every=0)


@pytest.mark.slow
def test_diverging_run_stops_with_a_clear_message(tiny_city, tmp_path):
    config = TrainConfig(
        dataset=tiny_city["train"], out=str(tmp_path / "run"), backbone="tiny", num_clusters=4,
        image_size=(32, 48), num_negatives=2, epochs=2, num_candidates=50, refresh_every=1000,
        cluster_images=8, descriptors_per_image=20, precision="float32", lr=1e30,
        tensorboard=False, verbose=0,
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 1, batch \d"):
        train(config)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["failure"]["loss"] == "nan"
    assert len(summary["epochs"]) == 1 and summary["epochs"][0]["loss"] is None
    assert not (tmp_path / "run" / "last.keras").exists()  # NaN weights are not saved
    assert keras.config.dtype_policy().name == "float32"


def test_optimizer_choice():
    import keras

    from sare_tf.training.config import TrainConfig
    from sare_tf.training.recipe import make_optimizer

    sgd = make_optimizer(TrainConfig(lr=1e-3, momentum=0.9, weight_decay=1e-3))
    assert isinstance(sgd, keras.optimizers.SGD)
    assert sgd.momentum == 0.9 and sgd.weight_decay == 1e-3
    adam = make_optimizer(TrainConfig(optimizer="adam", lr=1e-4, weight_decay=1e-3))
    assert isinstance(adam, keras.optimizers.AdamW) and adam.weight_decay == 1e-3
    with pytest.raises(ValueError, match="Unknown optimizer"):
        TrainConfig(optimizer="rmsprop")
