"""Runs a user can trust (issue 19): seeds, initial models, epochs=0, embedding collapse.

Every test trains for real on the tiny synthetic city with the tiny backbone.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from sare_tf.training import TrainConfig, train

IMAGE_SIZE = (48, 64)


def _config(tiny_city, out, **changes) -> TrainConfig:
    settings = dict(
        dataset=tiny_city["train"], val_dataset=tiny_city["val"], out=str(out),
        backbone="tiny", num_clusters=4, image_size=IMAGE_SIZE, num_negatives=2, batch_size=4,
        epochs=1, steps_per_epoch=4, lr=0.01, num_candidates=50, cluster_images=16,
        precision="float32", tensorboard=False, verbose=0, seed=3,
    )  # fmt: skip
    settings.update(changes)
    return TrainConfig(**settings)


def _weights(path):
    import sare_tf.layers  # noqa: F401

    model = keras.saving.load_model(path, compile=False)
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def test_epochs_zero_writes_the_cluster_initialised_model_and_its_recall(tiny_city, tmp_path):
    summary = train(_config(tiny_city, tmp_path / "init", epochs=0))
    assert summary["status"] == "initialized" and summary["epochs"] == []
    path = tmp_path / "init" / summary["paths"]["initial_model"]
    assert path.name == "initial.keras" and path.is_file()
    assert not (tmp_path / "init" / "backup").exists()
    recall = summary["initial_validation"]
    assert set(recall) >= {"recall@1", "recall@5", "recall@10"}
    # The written model is the clustered one (NetVLAD initialised) and records its image size.
    from sare_tf.artifacts import load_descriptor_model
    from sare_tf.models import netvlad_layer

    loaded = load_descriptor_model(path)
    assert loaded.image_size == IMAGE_SIZE
    assert netvlad_layer(loaded.model).is_initialized
    with open(tmp_path / "init" / "summary.json") as handle:
        assert json.load(handle)["status"] == "initialized"


@pytest.mark.slow
def test_the_same_seed_gives_the_same_run_and_another_seed_another(tiny_city, tmp_path):
    """Issue 19.2: the seed must seed the model's initial weights too."""
    first = train(_config(tiny_city, tmp_path / "a", epochs=0))
    second = train(_config(tiny_city, tmp_path / "b", epochs=0))
    assert second["initial_validation"] == first["initial_validation"]
    other = train(_config(tiny_city, tmp_path / "c", epochs=0, seed=4))
    assert first["seed"] == 3 and other["seed"] == 4
    a, b, c = (_weights(tmp_path / x / "initial.keras") for x in ("a", "b", "c"))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    kernel = next(name for name in a if "block1_conv1" in name and "kernel" in name)
    assert not np.allclose(a[kernel], c[kernel])
    # Trained for real: the same seed, the same weights and losses after the epoch.
    run_a = train(_config(tiny_city, tmp_path / "ta"))
    run_b = train(_config(tiny_city, tmp_path / "tb"))
    assert run_a["epochs"][0]["loss"] == pytest.approx(run_b["epochs"][0]["loss"], rel=1e-6)
    trained_a, trained_b = (
        _weights(tmp_path / "ta" / "last.keras"),
        _weights(tmp_path / "tb" / "last.keras"),
    )
    for name in trained_a:
        np.testing.assert_allclose(trained_a[name], trained_b[name], atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_initial_model_settings_are_checked_and_the_summary_describes_the_model(
    tiny_city, tmp_path
):
    """Issue 19.3: --backbone / --num-clusters were silently ignored with --initial-model."""
    train(_config(tiny_city, tmp_path / "init", epochs=0))
    initial = str(tmp_path / "init" / "initial.keras")
    for change, message in (
        ({"backbone": "vgg16"}, r"--backbone vgg16 \(the model has tiny\)"),
        ({"num_clusters": 64}, r"--num-clusters 64 \(the model has 4\)"),
        ({"weights": "imagenet"}, r"--weights imagenet"),
    ):
        settings = {"backbone": None, "num_clusters": None, **change}
        with pytest.raises(ValueError, match=message):
            train(_config(tiny_city, tmp_path / "bad", initial_model=initial, **settings))
    summary = train(
        _config(
            tiny_city, tmp_path / "fine", initial_model=initial, backbone=None,
            num_clusters=None, image_size=None,
        )
    )  # fmt: skip
    assert summary["model"]["backbone"] == "tiny" and summary["model"]["num_clusters"] == 4
    assert summary["config"]["backbone"] == "tiny" and summary["config"]["num_clusters"] == 4
    # No --image-size: the size the initial model records.
    assert summary["config"]["image_size"] == list(IMAGE_SIZE)
    assert summary["model"]["image_size"] == list(IMAGE_SIZE)


def test_cli_train_epochs_zero(tiny_city, tmp_path, capsys):
    from sare_tf import cli

    argv = [
        "train", "--dataset", tiny_city["train"], "--backbone", "tiny", "--num-clusters", "4",
        "--image-size", "48", "64", "--epochs", "0", "--cluster-images", "8",
        "--precision", "float32", "--out", str(tmp_path / "run"), "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert "Initialised (no training)" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "run" / "initial.keras")


def test_uniform_loss_and_pairwise_distance_against_hand_values():
    from sare_tf.losses import get_loss
    from sare_tf.training.callbacks import mean_pairwise_distance, uniform_loss

    assert uniform_loss(get_loss("sare-joint"), 10) == pytest.approx(np.log(11.0), rel=1e-6)
    assert uniform_loss(get_loss("sare-ind"), 10) == pytest.approx(np.log(2.0), rel=1e-6)
    assert uniform_loss(get_loss("triplet"), 5) == pytest.approx(0.1, rel=1e-6)
    assert uniform_loss(get_loss("contrastive"), 5) == pytest.approx(0.5 * 0.7**2, rel=1e-6)
    # Three points: (0,0), (3,0), (0,4): distances 3, 4, 5.
    assert mean_pairwise_distance(np.array([[0, 0], [3, 0], [0, 4]])) == pytest.approx(4.0)


@pytest.mark.slow
def test_embedding_collapse_is_detected_warned_and_recorded(tiny_city, tmp_path, caplog):
    """Issue 19.7: a far too high learning rate collapses the embedding; say so."""
    config = _config(
        tiny_city, tmp_path / "collapse", optimizer="adam", lr=0.5, epochs=2, steps_per_epoch=6,
        weight_decay=0.0,
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="Embedding collapse at epoch"):
        summary = train(config)
    collapse = summary["collapse"]
    assert collapse and collapse[-1]["uniform_loss"] == pytest.approx(np.log(3.0), rel=1e-6)
    assert collapse[-1]["mean_pairwise_distance"] < 0.1
    assert "too high learning rate (lr=0.5)" in caplog.text  # logged as a warning
    with open(tmp_path / "collapse" / "summary.json") as handle:
        assert json.load(handle)["collapse"] == collapse
    # A healthy run records no collapse.
    healthy = train(_config(tiny_city, tmp_path / "healthy", optimizer="adam", lr=1e-4, epochs=2))
    assert "collapse" not in healthy


@pytest.mark.slow
def test_export_needs_no_image_size_for_a_model_trained_by_sare_tf_train(tiny_city, tmp_path):
    """Issue 13: the training size is recorded in the model, so export stops asking for it."""
    from sare_tf import cli

    run = tmp_path / "run"
    argv = [
        "train", "--dataset", tiny_city["train"], "--backbone", "tiny", "--num-clusters", "4",
        "--image-size", "40", "56", "--epochs", "1", "--steps-per-epoch", "2",
        "--num-negatives", "2", "--num-candidates", "30", "--cluster-images", "8", "--lr", "0.01",
        "--precision", "float32", "--out", str(run), "--quiet", "--no-tensorboard",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    root = tmp_path / "exports"
    assert cli.main(["export", "--model", str(run / "last.keras"), "--name", "trained",
                     "--root", str(root)]) == 0  # fmt: skip
    with open(root / "trained" / "1" / "assets.extra" / "export_info.json") as handle:
        info = json.load(handle)
    assert info["image_size"] == [40, 56]
    assert info["signatures"]["serve_jpeg"]["resized_to"] == [40, 56]
    from sare_tf.artifacts import load_descriptor_model

    assert load_descriptor_model(root / "trained").image_size == (40, 56)


def _spread(path, tiny_city):
    from sare_tf.artifacts import load_descriptor_model
    from sare_tf.data import GeoDataset
    from sare_tf.encoding import encode
    from sare_tf.training.callbacks import mean_pairwise_distance

    paths = GeoDataset.load(tiny_city["train"]).db_image_paths()[:32]
    descriptors, valid = encode(load_descriptor_model(path), paths, progress=False)
    return mean_pairwise_distance(descriptors[valid])


@pytest.mark.slow
def test_a_collapse_is_undone_the_rate_lowered_and_never_the_best_model(
    tiny_city, tmp_path, caplog
):
    """A far too high rate collapses the embedding at the first epoch: the run restores the
    weights from before it, lowers the rate, says so, and ends with spread descriptors."""
    config = _config(
        tiny_city, tmp_path / "run", optimizer="adam", lr=0.5, epochs=4, steps_per_epoch=6,
        weight_decay=0.0,
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="Restored the weights of"):
        summary = train(config)
    collapse = summary["collapse"]
    assert collapse[0]["epoch"] == 1 and collapse[0]["restored_epoch"] == 0
    assert [r["lr_scale"] for r in collapse] == pytest.approx(
        [0.1**k for k in range(1, len(collapse) + 1)]
    )
    rates = [record["learning_rate"] for record in summary["epochs"]]
    assert rates[0] == pytest.approx(0.5) and rates[1] == pytest.approx(0.05)
    assert "training goes on" in caplog.text
    collapsed_epochs = {record["epoch"] for record in collapse}
    assert summary["best"]["epoch"] not in collapsed_epochs
    for name in ("best.keras", "last.keras"):
        assert _spread(tmp_path / "run" / name, tiny_city) >= 0.5, name
    assert summary["status"] in ("completed", "stopped_collapsed")


@pytest.mark.slow
def test_a_run_that_keeps_collapsing_stops_and_says_what_was_tried(
    tiny_city, tmp_path, monkeypatch
):
    from sare_tf.training import callbacks

    # A detector that finds every epoch collapsed: the stop path, whatever the data.
    monkeypatch.setattr(callbacks.CollapseDetector, "is_collapsed", lambda self, *_: True)
    with pytest.warns(RuntimeWarning):
        summary = train(_config(tiny_city, tmp_path / "run", epochs=3, steps_per_epoch=2))
    assert summary["status"] == "stopped_collapsed" and len(summary["collapse"]) == 3
    assert "Stopped after 3 collapses" in summary["stopped"] and "--lr" in summary["stopped"]
    assert len(summary["epochs"]) == 3
    # No epoch was ever good: best.keras holds the restored weights of the start of training.
    assert summary["best"] == {
        "epoch": 0, "monitor": "val_recall@5", "val_recall@5": None, "spread": True,
        "path": "best.keras",
    }  # fmt: skip
    assert (tmp_path / "run" / "best.keras").is_file()


def test_a_collapse_is_a_deep_contraction_or_a_contraction_at_the_uniform_loss():
    from sare_tf.training.callbacks import CollapseDetector

    detector = CollapseDetector(np.log(6.0), [], (48, 64), embedding_model=None)
    detector.start_distance = 1.3
    assert detector.is_collapsed(0.05, 1.5)  # below a tenth of the start, whatever the loss
    assert detector.is_collapsed(0.35, 1.80)  # contracted, loss within 2 % of ln 6 = 1.792
    assert not detector.is_collapsed(0.35, 1.50)  # contracted while the loss falls: learning
    assert not detector.is_collapsed(0.60, 1.79)  # spread kept (above 0.5)
    detector.start_distance = 0.78  # a random ViT + BoQ contracting in its first epoch
    assert not detector.is_collapsed(0.19, 1.568 * np.log(6.0) / np.log(4.0))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["triplet", "contrastive", "npair"])
def test_every_tuple_loss_gets_the_same_guard(tiny_city, tmp_path, loss):
    """The guard looks at the descriptors, not at the loss: a collapse under the triplet,
    contrastive or N-pair loss is undone the same way, and never becomes the best model."""
    config = _config(
        tiny_city, tmp_path / loss, loss=loss, optimizer="adam", lr=0.5, epochs=2,
        steps_per_epoch=6, weight_decay=0.0,
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="Restored the weights of"):
        summary = train(config)
    first = summary["collapse"][0]
    assert first["epoch"] == 1 and first["restored_epoch"] == 0 and first["lr_scale"] == 0.1
    assert summary["epochs"][1]["learning_rate"] == pytest.approx(0.05)
    assert summary["best"]["epoch"] not in {record["epoch"] for record in summary["collapse"]}
    assert _spread(tmp_path / loss / "best.keras", tiny_city) >= 0.5


def test_train_config_repeats_a_recorded_run(tiny_city, tmp_path, capsys):
    """`train --config summary.json` runs the recorded settings again; flags beside it win."""
    import json

    from sare_tf import cli

    first = tmp_path / "first"
    argv = [
        "train", "--dataset", tiny_city["train"], "--backbone", "tiny", "--num-clusters", "4",
        "--image-size", "48", "64", "--epochs", "0", "--cluster-images", "8", "--lr", "3e-4",
        "--precision", "float32", "--out", str(first), "--quiet", "--seed", "5",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    again = tmp_path / "again"
    argv = ["train", "--config", str(first / "summary.json"), "--out", str(again), "--quiet"]
    assert cli.main(argv) == 0
    recorded = json.loads((first / "summary.json").read_text())["config"]
    repeated = json.loads((again / "summary.json").read_text())["config"]
    assert repeated == {**recorded, "out": str(again)}
    assert repeated["lr"] == 3e-4 and repeated["seed"] == 5 and repeated["backbone"] == "tiny"
    assert cli.main(["train", "--quiet", "--epochs", "0"]) == 2  # neither --dataset nor --config
    assert "--dataset is required" in capsys.readouterr().err
