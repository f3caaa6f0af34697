"""`sare-tf train`: NetVLAD trained with a SARE (or triplet / contrastive) loss and hard-negative
mining, with validation, best checkpoint and resume."""

from __future__ import annotations

import argparse
import json
import os

from sare_tf.config_options import add_config_arguments
from sare_tf.config_options import config_from_args as from_args
from sare_tf.training.config import VALIDATION_NS, TrainConfig

HELP = "train NetVLAD descriptors with a SARE / triplet / contrastive loss and hard-negative mining"
DESCRIPTION = """\
Trains an embedding model (backbone -> NetVLAD -> L2) on (query, positive, N negatives)
tuples re-mined every --refresh-every queries, with SGD (momentum, weight decay) and the
learning rate halved every --lr-halve-every epochs: the SARE paper's recipe by default
(Liu, Li, Dai, ICCV 2019). NetVLAD clusters are initialised from training images first.
After each epoch, Recall@1/5/10 on --val-dataset is logged (console, TensorBoard, summary)
and the best model by validation Recall@5 (or --select-by) is saved as OUT/best.keras.
OUT/summary.json holds the config, per-epoch metrics and timings. A killed run resumes from
OUT/backup when the same command is run again."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field (their help texts live in the config's field metadata),
    and `--config` to start from a recorded run."""
    parser.add_argument(
        "--config", default=None, metavar="JSON",
        help="repeat a recorded run: its summary.json (or a JSON of these settings); flags "
        "given beside it replace its values, e.g. --out for a new run folder",
    )  # fmt: skip
    add_config_arguments(parser, TrainConfig, unset=True)


def recorded_config(path: str):
    """The `TrainConfig` a run's `summary.json` (its "config") or a settings JSON holds."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    except ValueError as error:
        raise ValueError(f"--config {path} is not JSON: {error}") from None
    if isinstance(record, dict) and isinstance(record.get("config"), dict):
        record = record["config"]  # a run's summary.json
    try:
        return TrainConfig.from_dict(record)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--config {path}: {error}") from None


def config_from_args(args: argparse.Namespace):
    """The `TrainConfig` of parsed command-line arguments (over `--config`'s, when given)."""
    config = getattr(args, "config", None)
    base = recorded_config(config) if config else None
    return from_args(TrainConfig, args, base=base, skip_unset=True)


def run(args: argparse.Namespace) -> int:
    from sare_tf.training import train

    config = config_from_args(args)
    summary = train(config)
    report(summary, summary.get("out_dir") or os.path.abspath(config.out))
    return 0


def report(summary: dict, out: str) -> None:
    """Prints what a finished run left in `out`: the last epoch's recall, the best model."""
    best = summary.get("best")
    last = summary["epochs"][-1] if summary["epochs"] else {}
    recalls = ", ".join(
        f"R@{n} {100 * last[f'val_recall@{n}']:.1f}%"
        for n in VALIDATION_NS
        if f"val_recall@{n}" in last
    )
    if summary["status"] == "initialized":
        print(f"Initialised (no training): {os.path.join(out, summary['paths']['initial_model'])}")
        initial = summary.get("initial_validation") or {}
        if initial:
            print(
                "  "
                + ", ".join(f"R@{n} {100 * initial[f'recall@{n}']:.1f}%" for n in VALIDATION_NS)
            )
        print(f"  summary: {os.path.join(out, 'summary.json')}")
        return
    print(f"Training finished: {len(summary['epochs'])} epochs in {out}")
    if recalls:
        print(f"  last epoch: {recalls}")
    if best:
        monitor = best.get("monitor", "val_recall@5")  # older summaries: the paper's R@5
        value = best.get(monitor)
        metric = monitor.removeprefix("val_recall@")
        print(
            f"  best model: {os.path.join(out, best['path'])} (epoch {best['epoch']}, "
            + (
                f"R@{metric} {100 * value:.1f}%)"
                if value is not None
                else "restored after a collapse)"
            )
        )
    for record in summary.get("collapse") or []:
        print(
            f"  collapse at epoch {record['epoch']}: restored epoch {record.get('restored_epoch')}"
            f", learning rate x{record.get('lr_scale', 1.0):g} from then on"
        )
    if summary.get("stopped"):
        print(f"  {summary['stopped']}")
    print(f"  summary: {os.path.join(out, 'summary.json')}")
