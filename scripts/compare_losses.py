"""The paper's Sec. 7.6 comparison (Table 6, Fig. 8) on the synthetic city, with the demo recipe.

Usage:
    python scripts/compare_losses.py [--epochs 2] [--losses sare-joint npair ...] [--out runs/compare]

Every loss trains from one shared initial model with the demo's training preset (tiny backbone,
NetVLAD(16), 96 x 128 images, AdamW 1e-4, 10 hard negatives; `sare_tf.demo.demo_training`), with
`--epochs` epochs and one mining refresh per epoch, and is evaluated on the test split: OUT/table6.md,
OUT/table6.json, OUT/fig8_recall_curves.png. On Pittsburgh 30k use `sare-tf compare` with the
paper's recipe flags instead (README, "The paper's recipe and the flags").
"""

from __future__ import annotations

import argparse
import dataclasses
import os


def main(argv=None) -> int:
    from sare_tf.data import GeoDataset
    from sare_tf.demo import demo_training
    from sare_tf.synthetic.city import make_synthetic_city
    from sare_tf.training.comparison import COMPARISON_LOSSES, compare_losses

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per loss (default 2)")
    parser.add_argument("--losses", nargs="+", default=list(COMPARISON_LOSSES),
                        help="objectives to compare (default: all seven)")  # fmt: skip
    parser.add_argument("--preset", default="demo", choices=("demo", "tiny"),
                        help="synthetic city preset (default demo)")  # fmt: skip
    parser.add_argument("--data-dir", default="data/synthetic_city", help="where the city is")
    parser.add_argument("--out", default="runs/compare", help="output folder")
    args = parser.parse_args(argv)
    mats = make_synthetic_city(os.path.join(args.data_dir, args.preset), preset=args.preset,
                               progress=True)  # fmt: skip
    train_data = GeoDataset.load(mats["train"])
    config = dataclasses.replace(
        demo_training(quick=args.preset == "tiny"), dataset=mats["train"], val_dataset=mats["val"],
        epochs=args.epochs, refresh_every=train_data.num_queries, out=args.out,
    )  # fmt: skip
    compare_losses(config, mats["test"], losses=args.losses)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
