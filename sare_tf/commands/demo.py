"""`sare-tf demo`: the whole job end to end on the embedded synthetic city."""

from __future__ import annotations

import argparse
import dataclasses

HELP = "make the synthetic city, train NetVLAD with SARE, evaluate, export, draw saliency (< 10 min on CPU)"
DESCRIPTION = (
    "Runs the main job end to end on the synthetic city: cluster initialisation, Recall@N on the "
    "held-out test split before training, training with hard-negative mining, Recall@N after, "
    "SavedModel export, saliency panels, a Recall@N curve and runs/demo/metrics.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `DemoConfig` field, then the training flags of `TrainConfig` the demo
    exposes, with the demo preset's values as defaults: only the flags given replace the
    preset's values (the quick preset's with --quick)."""
    from sare_tf.config_options import add_config_arguments
    from sare_tf.demo import DEMO_TRAINING_FLAGS, DemoConfig, demo_training
    from sare_tf.training.config import TrainConfig

    add_config_arguments(parser, DemoConfig)
    add_config_arguments(
        parser, TrainConfig, names=DEMO_TRAINING_FLAGS, defaults=demo_training(), unset=True
    )


def run(args: argparse.Namespace) -> int:
    from sare_tf.config_options import config_from_args
    from sare_tf.demo import DEMO_TRAINING_FLAGS, DemoConfig, demo_training
    from sare_tf.demo.run import run_demo
    from sare_tf.training.config import TrainConfig

    training = config_from_args(
        TrainConfig, args, base=demo_training(args.quick), names=DEMO_TRAINING_FLAGS,
        skip_unset=True,
    )  # fmt: skip
    run_demo(dataclasses.replace(config_from_args(DemoConfig, args), training=training))
    return 0
