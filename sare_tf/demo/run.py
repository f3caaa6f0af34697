"""`run_demo`: the main job end to end on the synthetic city, in eight timed steps.

1. make (or reuse) the synthetic city;            2. build the model and initialise NetVLAD;
3. Recall@N on the held-out test split (before);  4. train with hard-negative mining;
5. Recall@N again with the best checkpoint;       6. export the SavedModel for TF Serving;
7. saliency panels and the Recall@N curve;        8. `metrics.json` and a summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import keras
import numpy as np

from sare_tf.atomic import save_model_atomic, write_json_atomic
from sare_tf.cluster_init import initialize_netvlad
from sare_tf.data import GeoDataset
from sare_tf.demo.config import DemoConfig
from sare_tf.evaluation.evaluate import run_dataset_evaluation
from sare_tf.evaluation.plots import plot_recall_curves
from sare_tf.export import export_versioned
from sare_tf.hardware import describe_cpu
from sare_tf.model import build_embedding_model
from sare_tf.precision import set_precision
from sare_tf.saliency.panels import write_panels
from sare_tf.synthetic.city import make_synthetic_city
from sare_tf.training import train
from sare_tf.training.config import TrainConfig

DEMO_QUERIES_FOR_SALIENCY = 6


class _Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int):
        self.total, self.index, self.started = total, 0, time.perf_counter()
        self.timings: dict[str, float] = {}
        self._name, self._start = None, None

    def start(self, name: str, message: str) -> None:
        self._finish()
        self.index += 1
        self._name, self._start = name, time.perf_counter()
        print(f"\n[{self.index}/{self.total}] {message}", flush=True)

    def _finish(self) -> None:
        if self._name is not None:
            self.timings[self._name] = round(time.perf_counter() - self._start, 2)

    def close(self) -> float:
        self._finish()
        self._name = None
        return round(time.perf_counter() - self.started, 2)


def _recall_table(before: dict, after: dict) -> str:
    lines = [f"{'':10}{'before':>10}{'after':>10}{'gain':>10}"]
    for key in before:
        lines.append(
            f"{key:10}{before[key]:10.3f}{after[key]:10.3f}{100 * (after[key] - before[key]):+9.1f}pt"
        )
    return "\n".join(lines)


def _fewer_negatives_why(num_negatives: int) -> str:
    paper = TrainConfig().num_negatives  # TrainConfig's defaults are the paper's recipe
    if num_negatives >= paper:
        return ""
    return f" (the paper has {paper}: a cheaper step, so more epochs fit the time)"


def _recipe_line(training) -> str:
    """What the demo trains, and why that and not the paper's recipe."""
    height, width = training.image_size
    return (
        f"recipe: {training.backbone} backbone (no pretrained weights exist offline, so a small "
        f"group-normalised network trained from scratch) at {height}x{width}, "
        f"NetVLAD({training.num_clusters}), {training.num_negatives} negatives per tuple"
        f"{_fewer_negatives_why(training.num_negatives)}, "
        f"{training.epochs} epochs of {training.loss} with {training.optimizer} lr {training.lr:g} "
        "(SGD with momentum, as the paper: Adam's equal-size first steps collapsed a seed); "
        "sized to finish in minutes on 2 CPU cores"
    )


def _timeline(timings: dict, total: float) -> str:
    """Seconds per stage, with each stage's share of the whole run."""
    lines = ["stage        seconds   share"]
    for name, seconds in timings.items():
        lines.append(f"{name:10}{seconds:10.1f}{100 * seconds / max(total, 1e-9):7.0f}%")
    lines.append(f"{'total':10}{total:10.1f}")
    return "\n".join(lines)


def _saliency_queries(first_correct_before, first_correct_after, count: int) -> list[int]:
    """Queries that training fixed first (the interesting ones), then others, in id order."""
    fixed = np.flatnonzero((first_correct_before != 0) & (first_correct_after == 0))
    rest = np.setdiff1d(np.arange(len(first_correct_after)), fixed)
    return [int(i) for i in np.concatenate([fixed, rest])[:count]]


def run_demo(config: DemoConfig | None = None) -> dict:
    """Runs the whole job on the synthetic city and returns the contents of `metrics.json`.

    Args:
        config: settings (defaults: `DemoConfig()`).

    Returns:
        `{"before": {"recall@1": ..}, "after": {..}, "seconds": .., ...}`, also written to
        `<out>/metrics.json`.
    """
    config = (config or DemoConfig()).resolved()
    steps = _Steps(total=8)
    os.makedirs(config.out, exist_ok=True)
    city = _make_city(config, steps)
    model, policy, before_path = _initialised_model(config, city, steps)
    before = _evaluate(model, city, config, steps, "before")
    trained, summary, best_path = _train(config, model, city, steps)
    after = _evaluate(trained, city, config, steps, "after")
    print(_recall_table(before.metrics, after.metrics))
    exported = _export(config, trained, best_path, steps)
    curve_path, saliency_dir = _plots(config, city, before, after, trained, before_path, steps)
    steps.start("metrics", f"Writing {config.out}/metrics.json")
    seconds = steps.close()
    metrics = {
        "before": before.metrics,
        "after": after.metrics,
        "gain": {key: after.metrics[key] - before.metrics[key] for key in before.metrics},
        "seconds": seconds,
        "timings": steps.timings,
        "precision": policy,
        "config": {**dataclasses.asdict(config), "training": config.training.to_dict()},
        "training": {
            key: summary.get(key, default)
            for key, default in (("epochs", None), ("best", None), ("collapse", []))
        },  # fmt: skip
        "paths": {
            "run": config.out,
            "recall_curve": curve_path,
            "saliency": saliency_dir,
            "saved_model": exported.saved_model_dir,
            "keras_model": exported.keras_path,
            "city": city.folder,
        },  # fmt: skip
    }
    write_json_atomic(os.path.join(config.out, "metrics.json"), metrics)
    _print_summary(config, metrics, steps)
    return json.loads(json.dumps(metrics, default=str))


@dataclasses.dataclass
class _City:
    folder: str
    train: GeoDataset
    val: GeoDataset
    test: GeoDataset


def _make_city(config: DemoConfig, steps: _Steps) -> _City:
    folder = os.path.join(config.data_dir, config.preset)
    steps.start("city", f"Synthetic city ({config.preset} preset) in {folder}")
    mats = make_synthetic_city(
        folder, preset=config.preset, seed=config.training.seed, progress=True
    )
    city = _City(
        folder, *(GeoDataset.from_dbstruct(mats[split]) for split in ("train", "val", "test"))
    )
    for dataset in (city.train, city.val, city.test):
        print("  " + dataset.summary())
    return city


def _initialised_model(config: DemoConfig, city: _City, steps: _Steps):
    """The untrained model with NetVLAD's clusters initialised, its precision, and its file."""
    training = config.training
    steps.start(
        "model",
        f"Building {training.backbone} + NetVLAD({training.num_clusters}) and initialising the "
        "clusters",
    )
    policy = set_precision(training.precision)
    print(f"  precision: {policy} on {describe_cpu()}")
    print("  " + _recipe_line(training))
    keras.utils.set_random_seed(training.seed)
    image_size = tuple(training.image_size)
    model = build_embedding_model(
        training.backbone, num_clusters=training.num_clusters,
        trainable_from=training.trainable_from, input_shape=(*image_size, 3), name="sare_demo",
    )  # fmt: skip
    initialize_netvlad(
        model, city.train.db_image_paths(), image_size, descriptors_per_image=50,
        max_images=300, seed=training.seed,
    )  # fmt: skip
    before_path = os.path.join(config.out, "before.keras")
    save_model_atomic(model, before_path)
    return model, policy, before_path


def _evaluate(model, city: _City, config: DemoConfig, steps: _Steps, when: str):
    """Recall@N on the test split `when` = "before" or "after" training."""
    metric = config.training.select_by.replace("recall", "Recall")
    what = (
        "before training"
        if when == "before"
        else f"after training (best checkpoint by validation {metric})"
    )
    steps.start(when, f"Recall@N on the test split {what} ({city.test.num_queries} queries)")
    evaluation = run_dataset_evaluation(
        model, city.test, tuple(config.training.image_size), batch_size=32
    )
    if when == "before":
        for key, value in evaluation.metrics.items():
            print(f"  {key}: {value:.3f}")
    return evaluation


def _train(config: DemoConfig, model, city: _City, steps: _Steps):
    """Trains; returns the best checkpoint (by `select_by`), the summary and its path."""
    training = config.training
    steps.start(
        "train",
        f"Training with {training.loss} and hard-negative mining for {training.epochs} epoch(s)",
    )
    # One mining refresh per epoch: the demo city is small.
    train_config = dataclasses.replace(
        training, out=os.path.join(config.out, "train"), refresh_every=city.train.num_queries
    )
    summary = train(train_config, train_data=city.train, val_data=city.val, embedding_model=model)
    best_path = os.path.join(train_config.out, summary["paths"]["best_model"])
    trained = keras.models.load_model(best_path) if os.path.isfile(best_path) else model
    return trained, summary, best_path


def _export(config: DemoConfig, trained, best_path: str, steps: _Steps):
    steps.start("export", f"Exporting the SavedModel to {config.export_root}/{config.export_name}/")
    exported = export_versioned(
        trained, root=config.export_root, name=config.export_name,
        image_size=tuple(config.training.image_size), source_model=best_path,
    )  # fmt: skip
    print(f"  version {exported.version}: {exported.saved_model_dir}")
    return exported


def _plots(config: DemoConfig, city: _City, before, after, trained, before_path, steps):
    """The Recall@N curve and the saliency panels (untrained vs trained); their paths."""
    loss = config.training.loss
    steps.start("plots", "Recall@N curve and saliency panels (untrained vs trained)")
    curve_path = plot_recall_curves(
        {
            "initialised (before training)": before.result.curve(25),
            f"{loss} (after training)": after.result.curve(25),
        },
        os.path.join(config.out, "recall_curve.png"),
        title=f"{city.test.name}: Recall@N",
    )
    query_ids = _saliency_queries(
        before.result.first_correct_rank,
        after.result.first_correct_rank,
        DEMO_QUERIES_FOR_SALIENCY if not config.quick else 2,
    )
    saliency_dir = os.path.join(config.out, "saliency")
    write_panels(
        trained, city.test, query_ids, saliency_dir,
        image_size=tuple(config.training.image_size), method=config.saliency_method,
        db_descriptors=after.db_desc, query_descriptors=after.query_desc,
        model_name=f"after ({loss})", compare_model=keras.models.load_model(before_path),
        compare_db_descriptors=before.db_desc, compare_query_descriptors=before.query_desc,
        compare_name="before training",
    )  # fmt: skip
    return curve_path, saliency_dir


def _print_summary(config: DemoConfig, metrics: dict, steps: _Steps) -> None:
    paths, seconds = metrics["paths"], metrics["seconds"]
    print("\n" + "=" * 60)
    print(f"sare-tf demo finished in {seconds / 60:.1f} min ({metrics['precision']})")
    print(_recall_table(metrics["before"], metrics["after"]))
    print(_timeline(steps.timings, seconds))
    print(f"metrics:       {os.path.join(config.out, 'metrics.json')}")
    print(f"recall curve:  {paths['recall_curve']}")
    print(f"saliency:      {paths['saliency']}/")
    print(f"SavedModel:    {paths['saved_model']}  (serve it: see saved_models/README.md)")
    print(f"training run:  {os.path.join(config.out, 'train')}/ (summary.json, best.keras)")
