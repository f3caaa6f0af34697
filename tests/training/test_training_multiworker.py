"""MultiWorkerMirroredStrategy with two real worker processes on localhost.

Each worker is a fresh Python process with its own `TF_CONFIG` (cluster of two workers on free
local ports); they talk over gRPC as on separate hosts. Every run has a deadline: a hung
collective fails the test (both workers are killed) instead of hanging CI.

1. One training step on a fixed global batch matches the same step on one device.
2. `sare-tf train --strategy multiworker` runs to the end on both workers: the chief writes the
   run folder, worker 1 writes under `worker_1/`, and both hold the same weights and the same
   mining state after every refresh, although worker 1's cluster initialisation is made to
   differ (as on a host whose CPU rounds differently).
3. A multi-worker run resumes from its backups, and stops on every worker with a clear error
   (instead of hanging) when the workers' backups are not at the same point.
4. Partial mining stays aligned with a tuple pipeline that drops its incomplete last batch (as
   the recipe's does with more than one replica).

Data sharding: every worker builds the same dataset. Its source is `from_tensor_slices` (the
tuple pipeline's is `range` + `flat_map`), not files, so tf.data's AUTO policy falls back to
DATA sharding: each global batch is split into per-replica batches of `B / 2` and worker `i`
keeps the `i`-th; each worker still reads and decodes the whole global batch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from sare_tf.data import GeoDataset
from sare_tf.data.images import safe_load_image
from sare_tf.data.tuples import MiningState, make_tuple_dataset
from sare_tf.losses import get_loss
from sare_tf.mining import HardNegativeMining, PartialRefresh
from sare_tf.models import build_embedding_model, build_tuple_model, netvlad_layer

NUM_WORKERS = 2
DEADLINE_SECONDS = 240


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start_workers(args, log_dir, extra_env, processes: list, logs: list) -> None:
    """Starts every worker (appending to `processes` and `logs` as it goes)."""
    workers = [f"localhost:{port}" for port in _free_ports(NUM_WORKERS)]
    for index in range(NUM_WORKERS):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(tf_config)}
        env.update(extra_env or {})
        logs.append(open(log_dir / f"worker_{index}.log", "w+"))
        processes.append(
            subprocess.Popen(
                [sys.executable, *args], env=env, stdout=logs[-1], stderr=subprocess.STDOUT
            )
        )


def _run_workers(
    args: list[str], log_dir, stop_at_first_failure: bool = True, extra_env: dict | None = None
):
    """Runs `python args...` as every worker of a localhost cluster, with a deadline.

    Returns:
        `(exit codes, outputs)`; a worker still running at the deadline (or, with
        `stop_at_first_failure`, when another failed) is killed and has a negative code.
    """
    processes, logs = [], []
    try:
        _start_workers(args, log_dir, extra_env, processes, logs)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            if stop_at_first_failure and any(p.poll() not in (None, 0) for p in processes):
                break  # the others may wait for the failed one forever
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    return [p.returncode for p in processes], outputs


def _results(codes: list[int], outputs: list[str]) -> list[dict]:
    """The RESULT line of every worker, after checking that all exited with 0."""
    report = "\n".join(f"--- worker {i} ---\n{out[-4000:]}" for i, out in enumerate(outputs))
    assert codes == [0] * NUM_WORKERS, f"exit codes {codes} (negative: killed)\n{report}"
    results = []
    for output in outputs:
        line = next(x for x in output.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
    return results


STEP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF op

    import keras
    import numpy as np

    from sare_tf.losses import get_loss
    from sare_tf.models import build_embedding_model, build_tuple_model
    from sare_tf.training.multiworker import prepare_multiworker_fit

    work = sys.argv[1]
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    images = np.load(os.path.join(work, "images.npy"))
    dataset = tf.data.Dataset.from_tensor_slices(
        (images, np.zeros(len(images), "float32"))
    ).batch(len(images))
    with strategy.scope():
        embedding = build_embedding_model("tiny", num_clusters=4, trainable_from=None)
        model = build_tuple_model(embedding, 2)
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3)
        model.compile(optimizer, loss=get_loss("sare-joint"), jit_compile=False)
    model.load_weights(os.path.join(work, "initial.weights.h5"))
    prepare_multiworker_fit(model, dataset.element_spec)
    # What this worker's replica receives of the global batch (same sharding as fit's).
    local = [
        strategy.experimental_local_results(x)[0].numpy()
        for x, _ in strategy.experimental_distribute_dataset(dataset)
    ]
    loss = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history["loss"][0]
    np.savez(
        os.path.join(work, f"worker_{task}.npz"), local=np.stack(local),
        **{f"w{i}": w for i, w in enumerate(model.get_weights())},
    )
    print("RESULT " + json.dumps({
        "loss": float(loss),
        "replicas": strategy.num_replicas_in_sync,
        "is_chief": strategy.extended.should_checkpoint,
    }))
    """
)


def _tuple_images(num_tuples: int, size: int = 32) -> np.ndarray:
    """Tuples of 1 + 1 + 2 images: a colour per image plus a gradient and noise."""
    rng = np.random.default_rng(0)
    colours = rng.uniform(0, 255, size=(num_tuples, 4, 1, 1, 3))
    ramp = np.linspace(-60, 60, size)[None, None, :, None, None]
    ramp = ramp * rng.uniform(-1, 1, (num_tuples, 4, 1, 1, 3))
    noise = rng.normal(0, 20, size=(num_tuples, 4, size, size, 3))
    return np.clip(colours + ramp + noise, 0, 255).astype("float32")


@pytest.mark.slow
def test_one_step_on_two_workers_matches_one_device(tmp_path):
    global_batch = 8
    images = _tuple_images(global_batch)
    np.save(tmp_path / "images.npy", images)
    embedding = build_embedding_model("tiny", num_clusters=4, trainable_from=None)
    netvlad_layer(embedding).set_centroids(
        0.05 * np.random.default_rng(1).normal(size=(4, 128)), 10.0
    )
    model = build_tuple_model(embedding, 2)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3)
    model.compile(optimizer, loss=get_loss("sare-joint"), jit_compile=False)
    model.save_weights(tmp_path / "initial.weights.h5")
    before = [w.copy() for w in model.get_weights()]
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(global_batch, "float32")))
    single_loss = model.fit(dataset.batch(global_batch), epochs=1, verbose=0, shuffle=False)
    single_loss = single_loss.history["loss"][0]
    single = model.get_weights()

    script = tmp_path / "step_worker.py"
    script.write_text(STEP_SCRIPT)
    results = _results(*_run_workers([str(script), str(tmp_path)], tmp_path))

    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["is_chief"] for r in results] == [True, False]
    half = global_batch // NUM_WORKERS
    for index, result in enumerate(results):
        saved = np.load(tmp_path / f"worker_{index}.npz")
        # DATA sharding of the global batch: worker i trains on tuples [i * B/2, (i+1) * B/2).
        np.testing.assert_array_equal(saved["local"][0], images[index * half : (index + 1) * half])
        assert result["loss"] == pytest.approx(single_loss, abs=1e-6)
        weights = [saved[f"w{i}"] for i in range(len(single))]
        assert max(float(np.abs(a - b).max()) for a, b in zip(weights, single, strict=True)) < 1e-6
    assert abs(single_loss - np.log(3.0)) > 1e-3  # not the all-equal degenerate loss
    update = max(float(np.abs(a - b).max()) for a, b in zip(single, before, strict=True))
    assert update > 1e-4  # the step moved the weights (by far more than the tolerance)


RECIPE_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys

    import numpy as np

    import sare_tf.cluster_init as cluster_init
    from sare_tf.cli import main
    from sare_tf.mining import HardNegativeMining
    from sare_tf.models import netvlad_layer

    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    record = {"centroids_after_init": None, "mining_digests": []}

    def digest(*arrays):
        data = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
        return hashlib.sha256(data).hexdigest()[:16]

    initialize_netvlad = cluster_init.initialize_netvlad

    def initialize_differently(model, *args, seed=0, **kwargs):
        # Worker 1 stands for a host that computes other centroids: another seed.
        alpha = initialize_netvlad(model, *args, seed=seed + task, **kwargs)
        record["centroids_after_init"] = digest(*netvlad_layer(model).get_weights())
        return alpha

    cluster_init.initialize_netvlad = initialize_differently
    refresh = HardNegativeMining.refresh

    def recorded_refresh(self, full=True):
        result = refresh(self, full)
        record["mining_digests"].append(digest(self.state.indices.numpy(), self.state.valid.numpy()))
        return result

    HardNegativeMining.refresh = recorded_refresh
    if os.environ.get("KEEP_BACKUP"):
        # As if the run were killed after its last backup: BackupAndRestore keeps it.
        import keras

        keras.callbacks.BackupAndRestore.on_train_end = lambda self, logs=None: None
    code = main(sys.argv[1:])
    print("RESULT " + json.dumps({"code": code, **record}))
    sys.exit(code)
    """
)


@pytest.mark.slow
def test_sare_tf_train_multiworker_two_workers(tiny_city, tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "recipe_worker.py"
    script.write_text(RECIPE_SCRIPT)
    # 24 training queries in batches of 23: the incomplete last batch (1 tuple, which would
    # leave worker 1 an empty batch) is dropped, so every epoch is one step on both workers.
    args = [
        str(script), "train",
        "--dataset", tiny_city["train"], "--val-dataset", tiny_city["val"], "--out", str(out),
        "--backbone", "tiny", "--num-clusters", "4", "--image-size", "32", "48",
        "--num-negatives", "2", "--batch-size", "23", "--epochs", "2", "--refresh-every", "23",
        "--num-candidates", "50", "--cluster-images", "8",
        "--strategy", "multiworker", "--validate-before-training", "--quiet",
    ]  # fmt: skip
    chief, other = _results(*_run_workers(args, tmp_path))

    assert chief["code"] == other["code"] == 0
    # The centroids did differ after cluster init; the chief's were broadcast to worker 1.
    assert chief["centroids_after_init"] != other["centroids_after_init"]
    # Same mining state on both workers after every refresh (initial + one per batch).
    assert len(chief["mining_digests"]) == 3
    assert chief["mining_digests"] == other["mining_digests"]

    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "best.keras", "last.keras", "worker_1"} <= names
    assert "backup" not in names  # removed when the run completed
    worker_names = {p.name for p in (out / "worker_1").iterdir()}
    assert {"summary.json", "best.keras", "last.keras"} <= worker_names
    assert not list(out.rglob(".*tmp*"))
    summary = json.loads((out / "summary.json").read_text())
    other_summary = json.loads((out / "worker_1" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["strategy"] == {"name": "multiworker", "num_replicas": 2}
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    for key in ("loss", "val_recall@1", "val_recall@5"):
        assert [e[key] for e in summary["epochs"]] == [e[key] for e in other_summary["epochs"]]
    assert summary["initial_validation"] == other_summary["initial_validation"]
    assert summary["out_dir"] == str(out)
    assert other_summary["out_dir"] == str(out / "worker_1")

    import sare_tf.layers  # noqa: F401 (registers the custom layers for loading)

    chief_model = keras.models.load_model(out / "last.keras")
    other_model = keras.models.load_model(out / "worker_1" / "last.keras")
    for a, b in zip(chief_model.get_weights(), other_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    best = keras.models.load_model(out / "best.keras")
    descriptors = best.predict(np.zeros((1, 32, 48, 3), "float32"), verbose=0)
    assert descriptors.shape == (1, 4 * 128)
    assert np.linalg.norm(descriptors) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_multiworker_resume_needs_every_worker_at_the_same_backup(tiny_city, tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "recipe_worker.py"
    script.write_text(RECIPE_SCRIPT)

    def args(epochs):
        return [
            str(script), "train", "--dataset", tiny_city["train"], "--out", str(out),
            "--backbone", "tiny", "--num-clusters", "4", "--image-size", "32", "48",
            "--num-negatives", "2", "--batch-size", "4", "--epochs", str(epochs),
            "--steps-per-epoch", "2", "--num-candidates", "50", "--cluster-images", "8",
            "--precision", "float32", "--strategy", "multiworker", "--backup-every", "0",
            "--no-tensorboard", "--quiet",
        ]  # fmt: skip

    # Epoch 1, then "killed": both workers keep their backup (epoch 1).
    _results(*_run_workers(args(1), tmp_path, extra_env={"KEEP_BACKUP": "1"}))
    backups = [out / "backup", out / "worker_1" / "backup"]
    for backup in backups:
        assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1

    # Worker 1 lost its backup: both stop with the same clear error, neither hangs.
    backups[1].rename(tmp_path / "kept_backup")
    codes, outputs = _run_workers(args(2), tmp_path, stop_at_first_failure=False)
    assert codes == [2, 2], outputs  # the CLI's exit code for a ValueError
    for output in outputs:
        assert "train: error: The workers cannot resume together" in output
        assert "(one per replica: epoch 1 batch 0, none;" in output

    # With both backups, both resume at epoch 2 and finish alike.
    (tmp_path / "kept_backup").rename(backups[1])
    _results(*_run_workers(args(2), tmp_path))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and [e["epoch"] for e in summary["epochs"]] == [1, 2]
    assert summary["resumed"][0]["at_epoch"] == 2
    assert not backups[0].exists() and not backups[1].exists()

    import sare_tf.layers  # noqa: F401 (registers the custom layers for loading)

    chief_model = keras.models.load_model(out / "last.keras")
    other_model = keras.models.load_model(out / "worker_1" / "last.keras")
    for a, b in zip(chief_model.get_weights(), other_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_partial_mining_follows_a_pipeline_that_drops_the_last_batch(tiny_city):
    train = GeoDataset.from_dbstruct(tiny_city["train"])  # 24 training queries
    image_size, batch = (32, 48), 5  # 4 whole batches per pass, 4 queries left out
    embedding = build_embedding_model("tiny", num_clusters=4, trainable_from=None)
    netvlad_layer(embedding).set_centroids(
        0.05 * np.random.default_rng(0).normal(size=(4, 128)), 10.0
    )
    tuple_model = build_tuple_model(embedding, 2)
    state = MiningState(train.num_queries, 2, num_db=train.num_db)
    dataset = make_tuple_dataset(
        train, state, image_size, batch_size=batch, seed=7, drop_remainder=True
    )
    mining = HardNegativeMining(
        dataset.tuple_pipeline, refresh_every=10, policy=PartialRefresh(db_size=20), verbose=0
    )
    mining.set_model(tuple_model)
    mining.on_train_begin()  # full mining
    query_images = np.stack(
        [safe_load_image(p, image_size)[0].numpy() for p in train.query_image_paths()]
    )

    def served(batch_images):
        firsts = np.asarray(batch_images[0])[:, 0]  # the query image of each tuple
        diffs = np.abs(firsts[:, None] - query_images[None]).mean(axis=(2, 3, 4))
        return np.argmin(diffs, axis=1).tolist()

    passes = [[served(b) for b in dataset] for _ in range(2)]  # passes 0 and 1
    assert [len(p) for p in passes] == [4, 4] and all(len(b) == batch for b in passes[0])
    state.epoch.assign(0)  # replay from pass 0
    chunks = []
    for step in range(4):
        mining.on_train_batch_end(step)
        if len(mining.refreshes) > len(chunks) + 1:
            chunks.append(mining.last_query_ids)
    # After batches 0-1: batches 2-3. After batch 3 (the last of pass 0, whose 4 left-out
    # queries are never served): the first two batches of pass 1.
    assert len(chunks) == 2
    np.testing.assert_array_equal(chunks[0], np.sort(passes[0][2] + passes[0][3]))
    np.testing.assert_array_equal(chunks[1], np.sort(passes[1][0] + passes[1][1]))
