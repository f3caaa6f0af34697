"""`sare-tf train`: NetVLAD trained with a SARE (or triplet / contrastive) loss and hard-negative
mining, with validation, best checkpoint and resume."""

from __future__ import annotations

import argparse

HELP = "train NetVLAD descriptors with a SARE / triplet / contrastive loss and hard-negative mining"
DESCRIPTION = """\
Trains an embedding model (backbone -> NetVLAD -> L2) on (query, positive, N negatives)
tuples re-mined every --refresh-every queries, with SGD (momentum, weight decay) and the
learning rate halved every --lr-halve-every epochs: the SARE paper's recipe by default
(Liu, Li, Dai, ICCV 2019). NetVLAD clusters are initialised from training images first.
After each epoch, Recall@1/5/10 on --val-dataset is logged (console, TensorBoard, summary)
and the best-by-Recall@5 model is saved as OUT/best.keras. OUT/summary.json holds the
config, per-epoch metrics and timings. A killed run resumes from OUT/backup when the same
command is run again."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset", required=True, help="training split: .mat dbStruct, .csv or folder"
    )
    data.add_argument(
        "--val-dataset", default=None, help="validation split for Recall@N after each epoch"
    )
    data.add_argument("--image-root", default=None, help="folder the image paths are relative to")
    data.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="training / validation image size, recorded in the trained model (default: the "
        "--initial-model's recorded size, else 480 640)",
    )
    data.add_argument(
        "--augment", action="store_true", help="colour jitter and small crops on training tuples"
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--backbone",
        default=None,
        help="vgg16 (default), resnet50 or tiny (tests, demo); not with --initial-model",
    )
    model.add_argument(
        "--weights",
        default=None,
        help="backbone weights: 'imagenet' (downloaded by Keras) or a local weights file "
        "(default: random)",
    )
    model.add_argument(
        "--initial-model",
        default=None,
        help="start from this .keras embedding model (its backbone, clusters and image size)",
    )
    model.add_argument(
        "--num-clusters",
        type=int,
        default=None,
        help="NetVLAD K (default: 64); not with --initial-model",
    )
    model.add_argument(
        "--trainable-from",
        default="default",
        help="first trainable backbone layer (default: conv5 for VGG16; 'all' trains everything)",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--loss",
        default="sare-joint",
        help="sare-joint (default), sare-ind, sare-joint-cauchy, sare-ind-cauchy, "
        "sare-joint-exp, sare-ind-exp, triplet or contrastive",
    )
    optim.add_argument(
        "--epochs",
        type=int,
        default=30,
        help="epochs (default: 30); 0 writes OUT/initial.keras, the cluster-initialised untrained "
        "model (and its validation recall with --val-dataset)",
    )
    optim.add_argument("--batch-size", type=int, default=4, help="tuples per batch (default: 4)")
    optim.add_argument(
        "--num-negatives", type=int, default=10, help="negatives per tuple (default: 10)"
    )
    optim.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    optim.add_argument(
        "--lr-halve-every",
        type=int,
        default=5,
        help="halve the learning rate every N epochs (default: 5; 0: never)",
    )
    optim.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        help="sgd (the paper's recipe, default) or adam (AdamW: steadier from scratch)",
    )
    optim.add_argument(
        "--weight-decay", type=float, default=1e-3, help="weight decay (default: 1e-3)"
    )
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    optim.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="cap the batches per epoch (default: one pass over the training queries)",
    )

    mining = parser.add_argument_group("hard-negative mining")
    mining.add_argument(
        "--refresh-every",
        type=int,
        default=1000,
        help="training queries between re-minings (default: 1000)",
    )
    mining.add_argument(
        "--num-candidates",
        type=int,
        default=1000,
        help="random negatives sampled per query (default: 1000)",
    )
    mining.add_argument(
        "--mining-mode",
        choices=("full", "partial"),
        default="full",
        help="full: re-encode all queries and the database; partial: only the next chunk of "
        "queries, their positives and a shared random database subset (default: full)",
    )
    mining.add_argument(
        "--partial-db-size",
        type=int,
        default=None,
        help="database images per partial refresh (default: --num-candidates)",
    )
    mining.add_argument(
        "--mining-grow-with-lr",
        action="store_true",
        help="lengthen the refresh interval as the learning rate drops",
    )
    mining.add_argument(
        "--cluster-images",
        type=int,
        default=500,
        help="images sampled for NetVLAD cluster initialisation (default: 500)",
    )
    mining.add_argument(
        "--eval-batch-size",
        type=int,
        default=16,
        help="images per batch when encoding for mining and validation (default: 16)",
    )

    run_group = parser.add_argument_group("run")
    run_group.add_argument("--out", default="runs/train", help="run folder (default: runs/train)")
    run_group.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
        help=(
            "auto: mixed_float16 on a GPU; on a CPU mixed_bfloat16 with native bf16 (AMX, "
            "AVX512-BF16, Arm BF16), else float32 (default: auto)"
        ),
    )
    run_group.add_argument(
        "--force-precision", action="store_true", help="allow mixed_float16 without a GPU"
    )
    run_group.add_argument(
        "--strategy",
        choices=("none", "mirrored", "multiworker"),
        default="none",
        help="tf.distribute: mirrored (local GPUs) or multiworker (hosts from TF_CONFIG)",
    )
    run_group.add_argument(
        "--val-every", type=int, default=1, help="validate every N epochs (default: 1)"
    )
    run_group.add_argument(
        "--validate-before-training",
        action="store_true",
        help="also measure validation recall before the first epoch",
    )
    run_group.add_argument(
        "--backup-every",
        type=int,
        default=200,
        help="batches between resume backups (default: 200; 0: at epoch ends only)",
    )
    run_group.add_argument(
        "--no-tensorboard", action="store_true", help="do not write OUT/tensorboard"
    )
    run_group.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    run_group.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace):
    """The `TrainConfig` of parsed command-line arguments."""
    from sare_tf.training import TrainConfig

    return TrainConfig(
        dataset=args.dataset,
        val_dataset=args.val_dataset,
        image_root=args.image_root,
        out=args.out,
        loss=args.loss,
        backbone=args.backbone,
        weights=args.weights,
        initial_model=args.initial_model,
        num_clusters=args.num_clusters,
        trainable_from=None if args.trainable_from == "all" else args.trainable_from,
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_negatives=args.num_negatives,
        lr=args.lr,
        lr_halve_every=args.lr_halve_every,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        image_size=None if args.image_size is None else tuple(args.image_size),
        precision=args.precision,
        force_precision=args.force_precision,
        strategy=args.strategy,
        num_candidates=args.num_candidates,
        refresh_every=args.refresh_every,
        mining_mode=args.mining_mode,
        partial_db_size=args.partial_db_size,
        mining_grow_with_lr=args.mining_grow_with_lr,
        cluster_images=args.cluster_images,
        eval_batch_size=args.eval_batch_size,
        val_every=args.val_every,
        validate_before_training=args.validate_before_training,
        augment=args.augment,
        steps_per_epoch=args.steps_per_epoch,
        backup_every=args.backup_every or None,
        tensorboard=not args.no_tensorboard,
        seed=args.seed,
        verbose=0 if args.quiet else 1,
    )


def run(args: argparse.Namespace) -> int:
    import os

    from sare_tf.training import train

    config = config_from_args(args)
    summary = train(config)
    out = summary.get("out_dir") or os.path.abspath(config.out)
    best = summary.get("best")
    last = summary["epochs"][-1] if summary["epochs"] else {}
    recalls = ", ".join(
        f"R@{n} {100 * last[f'val_recall@{n}']:.1f}%"
        for n in (1, 5, 10)
        if f"val_recall@{n}" in last
    )
    if summary["status"] == "initialized":
        print(f"Initialised (no training): {os.path.join(out, summary['paths']['initial_model'])}")
        initial = summary.get("initial_validation") or {}
        if initial:
            print(
                "  " + ", ".join(f"R@{n} {100 * initial[f'recall@{n}']:.1f}%" for n in (1, 5, 10))
            )
        print(f"  summary: {os.path.join(out, 'summary.json')}")
        return 0
    print(f"Training finished: {len(summary['epochs'])} epochs in {out}")
    if recalls:
        print(f"  last epoch: {recalls}")
    if best:
        print(
            f"  best model: {os.path.join(out, best['path'])} "
            f"(epoch {best['epoch']}, R@5 {100 * best['val_recall@5']:.1f}%)"
        )
    print(f"  summary: {os.path.join(out, 'summary.json')}")
    return 0
