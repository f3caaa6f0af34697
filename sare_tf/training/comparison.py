"""The paper's metric-learning comparison (Sec. 7.6, Table 6, Fig. 8): every objective trained
the same way on the same tuples, then Recall@N on one test split.

Same way means: one initial model (VGG16 or the chosen backbone, NetVLAD clustered once, the
`--epochs 0` run) that every loss starts from, and the same `TrainConfig` (data, tuples, mining,
optimiser, schedule, seed) apart from the loss. Each run keeps its own folder (`OUT/<loss>/`,
resumable like any `sare-tf train` run), and the test split is evaluated with the best-by-
validation-Recall@5 checkpoint (the last one without a validation split).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

from sare_tf.artifacts import load_descriptor_model
from sare_tf.atomic import write_json_atomic
from sare_tf.data import GeoDataset
from sare_tf.evaluation.evaluate import run_dataset_evaluation
from sare_tf.evaluation.plots import plot_recall_curves
from sare_tf.losses import LOSS_NAMES
from sare_tf.registry import COMPARISON_LOSSES
from sare_tf.training import train

logger = logging.getLogger(__name__)

TABLE_NS = (1, 5, 10)


def _table(rows: list[dict], dataset: str, seconds: float) -> str:
    lines = [
        f"Recall@N (%) on {dataset}, every loss trained from the same initial model with the same "
        f"recipe ({seconds / 60:.1f} min in all).",
        "",
        "| loss | " + " | ".join(f"R@{n}" for n in TABLE_NS) + " | training (min) |",
        "| --- | " + " | ".join("---" for _ in TABLE_NS) + " | --- |",
    ]
    for row in rows:
        cells = [f"{100 * row[f'recall@{n}']:.1f}" for n in TABLE_NS]
        lines.append(f"| {row['loss']} | " + " | ".join(cells) + f" | {row['seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def compare_losses(config, test_dataset, losses=COMPARISON_LOSSES, out=None, progress=True) -> dict:
    """Trains `config` once per loss from one shared initial model; evaluates each on the test split.

    Args:
        config: the `TrainConfig` every run shares (its `loss` and `out` are replaced).
        test_dataset: a `GeoDataset` or a dataset path: where Recall@N is measured.
        losses: loss names (`sare_tf.losses.LOSS_NAMES`).
        out: the comparison folder (default `config.out`): `initial/`, one folder per loss,
            `table6.md`, `table6.json`, `fig8_recall_curves.png`.
        progress: progress bars and per-run reports.

    Returns:
        The report written to `table6.json`, plus "table": the Markdown table (table6.md).
    """

    unknown = [loss for loss in losses if loss not in LOSS_NAMES]
    if unknown or not losses:
        raise ValueError(f"Unknown or no losses {unknown}. Expected names of {LOSS_NAMES}.")
    out = os.fspath(out or config.out)
    os.makedirs(out, exist_ok=True)
    test = test_dataset if isinstance(test_dataset, GeoDataset) else GeoDataset.load(test_dataset)
    start = time.perf_counter()
    initial_run = train(dataclasses.replace(config, epochs=0, out=os.path.join(out, "initial")))
    initial = os.path.join(out, "initial", initial_run["paths"]["initial_model"])
    rows, curves = [], {}
    for loss in losses:
        if progress:
            logger.info(f"\n== {loss}: training from {initial}")
        run_start = time.perf_counter()
        run = dataclasses.replace(
            config, loss=loss, out=os.path.join(out, loss), initial_model=initial,
            backbone=None, num_clusters=None, image_size=None, weights=None,
        )  # fmt: skip
        summary = train(run)
        seconds = time.perf_counter() - run_start
        run_dir = summary.get("out_dir") or os.path.abspath(run.out)
        best = summary.get("best")
        chosen = os.path.join(run_dir, best["path"]) if best else None
        if chosen is None or not os.path.isfile(chosen):
            chosen = os.path.join(run_dir, summary["paths"]["last_model"])
        model = load_descriptor_model(chosen)
        evaluation = run_dataset_evaluation(
            model, test, model.image_size, ns=TABLE_NS, max_n=25, progress=progress
        )
        curves[loss] = evaluation.result.curve(min(25, max(evaluation.result.depth, 1)))
        rows.append({"loss": loss, "model": chosen, "seconds": round(seconds, 1),
                     **evaluation.metrics})  # fmt: skip
    total = time.perf_counter() - start
    table = _table(rows, test.name, total)
    with open(os.path.join(out, "table6.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    figure = plot_recall_curves(
        curves, os.path.join(out, "fig8_recall_curves.png"), title=f"{test.name}: Recall@N per loss"
    )
    report = {
        "dataset": test.name,
        "initial_model": initial,
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
        "rows": rows,
        "recall_curves": {k: [round(float(v), 6) for v in c] for k, c in curves.items()},
        "seconds": round(total, 1),
        "table_md": os.path.join(out, "table6.md"),
        "figure_png": figure,
    }
    write_json_atomic(os.path.join(out, "table6.json"), report)
    return {**report, "table": table}
