"""`sare-tf demo`: the whole job end to end on the embedded synthetic city."""

from __future__ import annotations

import argparse

HELP = "make the synthetic city, train NetVLAD with SARE, evaluate, export, draw saliency (< 10 min on CPU)"
DESCRIPTION = (
    "Runs the main job end to end on the synthetic city: cluster initialisation, Recall@N on the "
    "held-out test split before training, training with hard-negative mining, Recall@N after, "
    "SavedModel export, saliency panels, a Recall@N curve and runs/demo/metrics.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sare_tf.config_options import add_config_arguments
    from sare_tf.demo import DEMO_TRAINING_FLAGS, DemoConfig, demo_training
    from sare_tf.training.config import TrainConfig

    defaults = DemoConfig()
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 1-2 minute run on the tiny city (1 epoch, 60x80 images)",
    )
    parser.add_argument(
        "--preset", default=None, help="synthetic city size: tiny or demo (default demo)"
    )
    parser.add_argument(
        "--data-dir", default=defaults.data_dir, help=f"city folder (default {defaults.data_dir})"
    )
    parser.add_argument("--out", default=defaults.out, help=f"run folder (default {defaults.out})")
    parser.add_argument(
        "--export-root", default=defaults.export_root, help="SavedModel root (default saved_models)"
    )
    parser.add_argument(
        "--name",
        default=defaults.export_name,
        help=f"exported model name (default {defaults.export_name})",
    )
    # The training settings: flags of TrainConfig, defaults from the demo preset; only the
    # flags given replace the preset's values (the quick preset's with --quick).
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
    config = DemoConfig(
        data_dir=args.data_dir,
        preset=args.preset,
        out=args.out,
        export_root=args.export_root,
        export_name=args.name,
        quick=args.quick,
        training=training,
    )
    run_demo(config)
    return 0
