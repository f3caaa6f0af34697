"""Does training from scratch collapse the embedding? A sweep of runs, or one run step by step.

Usage:
    python scripts/collapse_study.py sweep                       # tiny + tiny-gn, Adam 1e-3 / 1e-2, seeds 0-4
    python scripts/collapse_study.py sweep --backbone tiny-gn --precision float32 mixed_bfloat16
    python scripts/collapse_study.py steps --backbone tiny --lr 1e-3      # what one run does per step
    python scripts/collapse_study.py steps --num-candidates 5             # random instead of hard negatives

Every run trains on the tiny synthetic city (`make-synthetic city --preset tiny`: 24 training
queries) with joint SARE, NetVLAD(8), 5 negatives per tuple, 60x80 images and Adam, through
`sare_tf.training.train` with its collapse guard. `sweep` prints, per run, the epoch losses, the
collapses the guard found and recovered from, and the mean pairwise distance of 32 database
descriptors of `best.keras` and `last.keras` (spread descriptors: about 1.4; collapsed: near 0).
`steps` measures after chosen training steps: that distance, per convolution the share of dead
ReLU channels, NetVLAD's soft-assignment entropy (normalised by ln K) and the norms of its residual
sums before intra-normalisation, each layer's gradient norm relative to its weights, and the
loss's squared distances to the positive and the negatives with the positive's probability
(docs/training_collapse.md reads these figures).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

STEPS_MEASURED = (1, 2, 3, 5, 8, 12, 20, 30, 45, 60)
PROBE_IMAGES = 32
IMAGE_SIZE = (60, 80)


def run_config(out, backbone, lr, seed, precision, epochs, num_candidates):
    from sare_tf.training.config import TrainConfig

    return TrainConfig(
        loss="sare-joint", backbone=backbone, num_clusters=8, image_size=IMAGE_SIZE,
        epochs=epochs, batch_size=4, num_negatives=5, optimizer="adam", lr=lr,
        lr_halve_every=0, num_candidates=num_candidates, trainable_from=None,
        precision=precision, seed=seed, eval_batch_size=32, tensorboard=False, verbose=0,
        out=out, cluster_images=100, descriptors_per_image=50,
    )  # fmt: skip


def city(data_dir):
    from sare_tf.data import GeoDataset
    from sare_tf.synthetic.city import make_synthetic_city

    mats = make_synthetic_city(os.path.join(data_dir, "tiny"), preset="tiny", seed=0)
    return GeoDataset.from_dbstruct(mats["train"]), GeoDataset.from_dbstruct(mats["val"])


def spread_of(model_path, paths) -> float | None:
    from sare_tf.artifacts import load_descriptor_model
    from sare_tf.encoding import encode
    from sare_tf.training.callbacks import mean_pairwise_distance

    if not os.path.exists(model_path):
        return None
    descriptors, valid = encode(load_descriptor_model(model_path), paths, progress=False)
    return round(mean_pairwise_distance(descriptors[valid]), 3)


def sweep(args) -> None:
    import dataclasses

    from sare_tf.training import train

    train_data, val_data = city(args.data_dir)
    probes = train_data.db_image_paths()[:PROBE_IMAGES]
    for backbone in args.backbone:
        for precision in args.precision:
            for lr in args.lr:
                for seed in args.seeds:
                    with tempfile.TemporaryDirectory() as out:
                        config = run_config(
                            out, backbone, lr, seed, precision, args.epochs, args.num_candidates
                        )
                        config = dataclasses.replace(config, refresh_every=train_data.num_queries)
                        summary = train(config, train_data=train_data, val_data=val_data)
                        row = {
                            "backbone": backbone, "precision": precision, "lr": lr, "seed": seed,
                            "status": summary["status"],
                            "losses": [round(e["loss"], 3) for e in summary["epochs"]],
                            "uniform_loss": round(math.log(1 + config.num_negatives), 3),
                            "collapsed_epochs": [r["epoch"] for r in summary.get("collapse") or []],
                            "best_spread": spread_of(os.path.join(out, "best.keras"), probes),
                            "last_spread": spread_of(os.path.join(out, "last.keras"), probes),
                        }  # fmt: skip
                    print(json.dumps(row), flush=True)


def layer_statistics(model, images) -> dict:
    """Dead ReLU channels per convolution, and NetVLAD's assignment entropy and residual norms."""
    import keras
    import numpy as np

    netvlad = model.aggregator
    convolutions = [layer.name for layer in model.layers if "_conv" in layer.name]
    probe = keras.Model(
        model.input, [model.get_layer(name).output for name in convolutions] + [netvlad.input]
    )
    *maps, features = [np.asarray(a, np.float64) for a in probe(images, training=False)]
    stats = {}
    for name, activation in zip(convolutions, maps, strict=True):
        channels = activation.reshape(-1, activation.shape[-1])
        stats[name] = {"dead": round(float((channels.max(0) <= 0).mean()), 3)}
    unit = features / (np.linalg.norm(features, axis=-1, keepdims=True) + 1e-12)
    flat = unit.reshape(len(images), -1, unit.shape[-1])
    kernel = np.asarray(netvlad.assignment_kernel, np.float64).reshape(unit.shape[-1], -1)
    logits = flat @ kernel
    assignment = np.exp(logits - logits.max(-1, keepdims=True))
    assignment /= assignment.sum(-1, keepdims=True)
    entropy = -(assignment * np.log(assignment + 1e-30)).sum(-1).mean() / math.log(kernel.shape[1])
    centroids = np.asarray(netvlad.centroids, np.float64)
    residuals = (
        np.einsum("bnk,bnd->bkd", assignment, flat) - assignment.sum(1)[..., None] * centroids
    )
    norms = np.linalg.norm(residuals, axis=-1)
    stats["netvlad"] = {
        "assignment_entropy": round(float(entropy), 3),
        "residual_norm_mean": round(float(norms.mean()), 4),
        "residual_norm_min": round(float(norms.min()), 5),
        "input_norm": round(float(np.linalg.norm(features, axis=-1).mean()), 3),
    }
    return stats


def steps(args) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from sare_tf.data.images import load_image
    from sare_tf.training import recipe, train
    from sare_tf.training.callbacks import mean_pairwise_distance

    train_data, val_data = city(args.data_dir)
    images = np.stack(
        [
            load_image(path, IMAGE_SIZE).numpy()
            for path in train_data.db_image_paths()[:PROBE_IMAGES]
        ]
    )
    records = []

    class StepStatistics(keras.callbacks.Callback):
        def __init__(self, run):
            super().__init__()
            self.run, self.step = run, 0

        def measure(self):
            run = self.run
            descriptors = np.asarray(run.embedding(images, training=False), np.float64)
            record = {"step": self.step, "spread": round(mean_pairwise_distance(descriptors), 4)}
            record.update(layer_statistics(run.embedding, images))
            with tf.GradientTape() as tape:
                tuples = run.fit_model(run.fixed_batch, training=True)
                loss = run.loss(None, tuples)
            variables = run.fit_model.trainable_variables
            gradients = tape.gradient(loss, variables)
            record["gradient_over_weight"] = {
                variable.path.split("/")[-2]: round(
                    float(tf.norm(g) / (tf.norm(variable) + 1e-12)), 6
                )
                for variable, g in zip(variables, gradients, strict=True)
                if g is not None and variable.path.endswith("kernel")
            }
            tuples = np.asarray(tuples, np.float64)
            query, positive, negatives = tuples[:, 0], tuples[:, 1], tuples[:, 2:]
            dp = ((query - positive) ** 2).sum(-1)
            dn = ((query[:, None] - negatives) ** 2).sum(-1)
            logits = np.concatenate([-dp[:, None], -dn], axis=1)
            probability = np.exp(logits - logits.max(1, keepdims=True))
            probability /= probability.sum(1, keepdims=True)
            record["loss_terms"] = {
                "loss": round(float(loss), 4), "dp": round(float(dp.mean()), 4),
                "dn": round(float(dn.mean()), 4), "p_positive": round(float(probability[:, 0].mean()), 4),
            }  # fmt: skip
            records.append(record)
            print(json.dumps(record), flush=True)

        def on_train_begin(self, logs=None):
            self.measure()

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step in STEPS_MEASURED:
                self.measure()

    make_callbacks, fit = recipe.TrainingRun._make_callbacks, recipe.TrainingRun._fit

    def with_statistics(run, mining):
        return make_callbacks(run, mining) + [StepStatistics(run)]

    def fit_keeping_a_batch(run, dataset, callbacks):
        run.fixed_batch = next(iter(dataset))[0]
        return fit(run, dataset, callbacks)

    recipe.TrainingRun._make_callbacks = with_statistics
    recipe.TrainingRun._fit = fit_keeping_a_batch
    with tempfile.TemporaryDirectory() as out:
        config = run_config(
            out, args.backbone[0], args.lr[0], args.seeds[0], args.precision[0], args.epochs,
            args.num_candidates,
        )  # fmt: skip
        import dataclasses

        config = dataclasses.replace(config, refresh_every=train_data.num_queries)
        train(config, train_data=train_data, val_data=val_data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "what", choices=("sweep", "steps"), help="a sweep of runs, or one run step by step"
    )
    parser.add_argument(
        "--backbone", nargs="+", default=["tiny", "tiny-plain"], help="backbones (steps: the first)"
    )
    parser.add_argument(
        "--lr", nargs="+", type=float, default=[1e-3, 1e-2], help="Adam learning rates"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="run seeds")
    parser.add_argument(
        "--precision", nargs="+", default=["float32"], help="float32 and/or mixed_bfloat16 (forced)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (6 steps each)")
    parser.add_argument(
        "--num-candidates", type=int, default=100,
        help="random database images a query's negatives are mined from (5 = random negatives)",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", default="data/synthetic_city", help="where the tiny city is made"
    )
    args = parser.parse_args(argv)
    (sweep if args.what == "sweep" else steps)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
