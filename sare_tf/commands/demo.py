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
    from sare_tf.demo import DemoConfig

    defaults = DemoConfig()
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 1-2 minute run on the tiny city (1 epoch, 60x80 images)",
    )
    parser.add_argument(
        "--loss", default=defaults.loss, help=f"loss name (default {defaults.loss})"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"training epochs (default {defaults.epochs})"
    )
    parser.add_argument(
        "--preset",
        default=None,
        help=f"synthetic city size: tiny or demo (default {defaults.preset})",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="image size (default 96 128)",
    )
    parser.add_argument(
        "--num-clusters",
        type=int,
        default=None,
        help=f"NetVLAD K (default {defaults.num_clusters})",
    )
    parser.add_argument(
        "--num-negatives",
        type=int,
        default=None,
        help=f"negatives per tuple (default {defaults.num_negatives})",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help=f"learning rate (default {defaults.lr})"
    )
    parser.add_argument(
        "--optimizer", choices=("adam", "sgd"), default=None, help="optimizer (default adam)"
    )
    parser.add_argument(
        "--precision",
        default=defaults.precision,
        help="auto (bf16 on a CPU with native bf16, else float32), float32, mixed_bfloat16",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the city, model and training"
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


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from sare_tf.demo import DemoConfig, run_demo

    config = DemoConfig(
        quick=args.quick,
        loss=args.loss,
        precision=args.precision,
        seed=args.seed,
        data_dir=args.data_dir,
        out=args.out,
        export_root=args.export_root,
        export_name=args.name,
    ).resolved()
    overrides = {
        "epochs": args.epochs,
        "preset": args.preset,
        "image_size": tuple(args.image_size) if args.image_size else None,
        "num_clusters": args.num_clusters,
        "num_negatives": args.num_negatives,
        "lr": args.lr,
        "optimizer": args.optimizer,
    }
    config = dataclasses.replace(
        config, quick=False, **{k: v for k, v in overrides.items() if v is not None}
    )
    run_demo(config)
    return 0
