"""`sare-tf compare`: the paper's metric-learning comparison (Sec. 7.6, Table 6, Fig. 8)."""

from __future__ import annotations

import argparse

from sare_tf.registry import COMPARISON_LOSSES, LOSS_NAMES

HELP = "train every loss the same way from one initial model and compare Recall@N (Table 6)"
DESCRIPTION = """\
Trains one run per --losses entry with the same recipe (every sare-tf train flag below applies
to all of them) from one shared initial model (NetVLAD clustered once), evaluates each best
checkpoint on --test-dataset, and writes OUT/table6.md and OUT/table6.json (Recall@1/5/10 per
loss, training minutes) and OUT/fig8_recall_curves.png (Recall@1..25 of every loss on one
plot). Each run is a normal, resumable training run in OUT/<loss>/."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sare_tf.config_options import add_config_arguments
    from sare_tf.training.config import TrainConfig

    parser.add_argument(
        "--losses", nargs="+", default=list(COMPARISON_LOSSES), metavar="LOSS", choices=LOSS_NAMES,
        help=f"the objectives to compare (default: {' '.join(COMPARISON_LOSSES)})",
    )  # fmt: skip
    parser.add_argument("--test-dataset", required=True, help="where Recall@N is measured")
    add_config_arguments(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    from sare_tf.commands.train import config_from_args
    from sare_tf.training.comparison import compare_losses

    config = config_from_args(args)
    report = compare_losses(config, args.test_dataset, losses=args.losses,
                            progress=not config.verbose == 0)  # fmt: skip
    print("\n" + report["table"])
    print(f"Wrote {report['table_md']}, {report['figure_png']} and the JSON beside them")
    return 0
