"""MirroredStrategy over two logical CPU devices: one step matches the single-device step, and
the fit recipe runs under `strategy="mirrored"` with `precision="auto"` (bf16 on a CPU), in a
fresh process: logical devices must be configured before TensorFlow initialises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sare_tf.precision import resolve_precision

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np

    from sare_tf.losses import get_loss
    from sare_tf.models import build_embedding_model, build_tuple_model, netvlad_layer
    from sare_tf.training import TrainConfig, make_strategy, train

    rng = np.random.default_rng(0)
    # 4 tuples, N = 2: a colour per image plus a gradient and noise, so descriptors differ.
    colours = rng.uniform(0, 255, size=(4, 4, 1, 1, 3))
    ramp = np.linspace(-60, 60, 32)[None, None, :, None, None] * rng.uniform(-1, 1, (4, 4, 1, 1, 3))
    noise = rng.normal(0, 20, size=(4, 4, 32, 32, 3))
    images = np.clip(colours + ramp + noise, 0, 255).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(4, "float32"))).batch(4)

    def make(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            embedding = build_embedding_model("tiny", num_clusters=4, trainable_from=None)
            centroids = 0.05 * np.random.default_rng(1).normal(size=(4, 128))
            netvlad_layer(embedding).set_centroids(centroids, 10.0)
            model = build_tuple_model(embedding, 2)
            optimizer = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3)
            model.compile(optimizer, loss=get_loss("sare-joint"), jit_compile=False)
        return model

    single = make(tf.distribute.get_strategy())
    strategy = make_strategy("mirrored")
    mirrored = make(strategy)
    mirrored.set_weights(single.get_weights())
    before = [w.copy() for w in single.get_weights()]
    single_loss = single.fit(dataset, epochs=1, verbose=0, shuffle=False).history["loss"][0]
    mirrored_loss = mirrored.fit(dataset, epochs=1, verbose=0, shuffle=False).history["loss"][0]
    pairs = list(zip(single.get_weights(), mirrored.get_weights(), before))
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "devices": list(strategy.extended.worker_devices),
        "single_loss": float(single_loss),
        "mirrored_loss": float(mirrored_loss),
        "max_weight_difference": max(float(np.abs(a - b).max()) for a, b, _ in pairs),
        "max_update": max(float(np.abs(a - c).max()) for a, _, c in pairs),
    }

    city, out = sys.argv[1], sys.argv[2]
    summary = train(TrainConfig(
        dataset=city + "/synthcity_train.mat", val_dataset=city + "/synthcity_val.mat",
        out=out, backbone="tiny", num_clusters=4, image_size=(32, 48), num_negatives=2,
        batch_size=4, epochs=1, steps_per_epoch=2, refresh_every=1000, num_candidates=50,
        cluster_images=8, descriptors_per_image=20, precision="auto", strategy="mirrored",
        validate_before_training=True, tensorboard=False, verbose=0,
    ))
    result["recipe"] = {
        "status": summary["status"],
        "replicas": summary["strategy"]["num_replicas"],
        "loss": summary["epochs"][0]["loss"],
        "val_recall@5": summary["epochs"][0]["val_recall@5"],
        "initial_recall@5": summary["initial_validation"]["recall@5"],
        "precision": summary["precision"],
    }
    print("RESULT " + json.dumps(result))
    """
)


@pytest.mark.slow
def test_mirrored_two_logical_cpus_matches_single_device(tiny_city, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, tiny_city["root"], str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["replicas"] == 2 and len(result["devices"]) == 2
    assert result["mirrored_loss"] == pytest.approx(result["single_loss"], rel=1e-5)
    assert abs(result["single_loss"] - np.log(3.0)) > 1e-3  # not the all-equal degenerate loss
    assert result["max_update"] > 1e-3  # the step changed the weights ...
    assert result["max_weight_difference"] < 1e-5  # ... identically on one and two replicas
    recipe = result["recipe"]
    assert recipe["status"] == "completed" and recipe["replicas"] == 2
    assert 0.0 <= recipe["val_recall@5"] <= 1.0 and recipe["loss"] > 0
    assert 0.0 <= recipe["initial_recall@5"] <= 1.0
    # "auto" follows the CPU: bf16 only where it multiplies bf16 natively.
    assert recipe["precision"] == resolve_precision("auto")
