"""Reproduces the SARE paper's Pitts30k training: VGG16 (ImageNet) + NetVLAD (K=64) trained
with the Gaussian SARE loss, joint and independent negatives, then tested on Pitts30k-test.

The recipe (Liu, Li, Dai, ICCV 2019, sec. 5): VGG16 cropped at conv5_3, conv5 and NetVLAD
trained, NetVLAD clusters initialised from training images; tuples of 1 query, 1 positive
(best of the database images within 10 m) and 10 hard negatives (farther than 25 m), re-mined
every 1000 queries among 1000 random negatives plus the previous hardest; 4 tuples per batch;
SGD with momentum 0.9, weight decay 1e-3, learning rate 1e-3 halved every 5 epochs; up to 30
epochs, the model with the best validation Recall@5 kept; images at 480x640.

You need the Pittsburgh images (the `000/` ... `010/` database folders and `queries_real/`)
and the NetVLAD split files `pitts30k_train.mat`, `pitts30k_val.mat`, `pitts30k_test.mat`.
ImageNet weights: `--weights imagenet` lets Keras download them (needs a network), or give a
local `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`.

Usage:
    python scripts/train_pitts30k.py --mat-dir datasets/ --image-root Pittsburgh/ \\
        --weights imagenet --out-root runs/pitts30k
    python scripts/train_pitts30k.py ... --losses sare-ind          # one of the two runs
    python scripts/train_pitts30k.py ... --mining-mode partial      # cheaper re-mining on a CPU
    python scripts/train_pitts30k.py ... --dry-run                  # print the configs only

Each run writes `OUT_ROOT/<loss>/` (summary.json, best.keras, TensorBoard logs) and, after
training, `OUT_ROOT/<loss>/test_recall.json` with Recall@1/5/10/20 of best.keras on the test
split. Running the same command again resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PAPER_LOSSES = ("sare-joint", "sare-ind")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train NetVLAD with Gaussian SARE (joint / independent) on Pitts30k.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--mat-dir", required=True, help="folder with pitts30k_{train,val,test}.mat"
    )
    parser.add_argument(
        "--image-root", required=True, help="the Pittsburgh image folder (000/ ... queries_real/)"
    )
    parser.add_argument(
        "--weights", default="imagenet", help="'imagenet' or a local VGG16 notop weights file"
    )
    parser.add_argument(
        "--losses", nargs="+", default=list(PAPER_LOSSES), help="losses to train, one run each"
    )
    parser.add_argument("--out-root", default="runs/pitts30k", help="one subfolder per loss")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (paper: 30)")
    parser.add_argument(
        "--precision", default="auto", help="auto (bf16 on CPU, fp16 on GPU) or float32"
    )
    parser.add_argument(
        "--strategy", default="none", choices=("none", "mirrored", "multiworker"), help="devices"
    )
    parser.add_argument(
        "--mining-mode",
        default="full",
        choices=("full", "partial"),
        help="full = the paper's re-encoding of everything; partial = next chunk only",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument(
        "--skip-test", action="store_true", help="do not evaluate on the test split"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the configs and exit")
    return parser.parse_args(argv)


def paper_config(args, loss: str):
    """The `TrainConfig` of one run (the defaults of TrainConfig are the paper's values)."""
    from sare_tf.training import TrainConfig

    return TrainConfig(
        dataset=os.path.join(args.mat_dir, "pitts30k_train.mat"),
        val_dataset=os.path.join(args.mat_dir, "pitts30k_val.mat"),
        image_root=args.image_root,
        out=os.path.join(args.out_root, loss),
        loss=loss,
        backbone="vgg16",
        weights=args.weights,
        num_clusters=64,
        epochs=args.epochs,
        batch_size=4,
        num_negatives=10,
        lr=1e-3,
        lr_halve_every=5,
        weight_decay=1e-3,
        momentum=0.9,
        image_size=(480, 640),
        precision=args.precision,
        strategy=args.strategy,
        num_candidates=1000,
        refresh_every=1000,
        mining_mode=args.mining_mode,
        seed=args.seed,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    for name in ("pitts30k_train.mat", "pitts30k_val.mat"):
        if not args.dry_run and not os.path.isfile(os.path.join(args.mat_dir, name)):
            print(f"error: {os.path.join(args.mat_dir, name)} not found", file=sys.stderr)
            return 2
    configs = [paper_config(args, loss) for loss in args.losses]
    if args.dry_run:
        for config in configs:
            print(json.dumps(config.to_dict(), indent=2))
        return 0

    from sare_tf.atomic import write_json_atomic
    from sare_tf.training import BEST_MODEL_FILE, train

    for config in configs:
        print(f"=== {config.loss}: training into {config.out}")
        summary = train(config)
        best = summary.get("best") or {}
        print(
            f"=== {config.loss}: best validation R@5 {best.get('val_recall@5')} (epoch {best.get('epoch')})"
        )
        test_mat = os.path.join(args.mat_dir, "pitts30k_test.mat")
        if args.skip_test or not os.path.isfile(test_mat):
            continue
        import keras

        import sare_tf.layers  # noqa: F401  (registers NetVLAD for loading)
        from sare_tf.data import GeoDataset
        from sare_tf.evaluation import evaluate_dataset

        model = keras.models.load_model(os.path.join(config.out, BEST_MODEL_FILE))
        test = GeoDataset.load(test_mat, args.image_root)
        metrics = evaluate_dataset(model, test, config.image_size, ns=(1, 5, 10, 20))
        write_json_atomic(os.path.join(config.out, "test_recall.json"), metrics)
        print(
            f"=== {config.loss}: Pitts30k-test "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
