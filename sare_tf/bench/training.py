"""Training-step throughput (tuples/s) of VGG16 + NetVLAD + SARE, float32 vs mixed_bfloat16.

One training step = forward of B tuples of 1 query + 1 positive + N negatives (B * (2 + N)
images at H x W), the SARE joint loss, the backward pass through the trainable layers (conv5
and NetVLAD by default, as in the paper) and an SGD update. Images are random tensors already
in memory, so this measures the model, not image decoding (the tuple pipeline has its own
benchmark). Each precision runs in a fresh process (the dtype policy is global): build,
one warm-up step (tracing), then `--steps` timed steps.

Against the hardware: the forward convolutions of the B * (2 + N) images (counted from the
model's layers) divided by the step time give a lower bound of the GFLOP/s achieved, printed
as a share of this CPU's measured conv peak in the same dtype (`sare-tf bench peak`; measured
first unless `--no-peak` or `--peak-json`). The backward pass of the trainable convolutions
costs about twice their forward (gradients of inputs and of weights), printed as an estimate.

Usage:
    sare-tf bench training                          # 480x640, N=10, B=1, f32 + bf16, + peak
    sare-tf bench training --precisions mixed_bfloat16 --batch-tuples 2 --steps 5
    sare-tf bench training --image-size 120 160 --steps 2 --no-peak   # quick check
    sare-tf bench training --json runs/bench/training.json

Target (issue 5, 2-core CPU): >= 0.8 tuples/s in mixed_bfloat16 at 480x640, N=10.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sare_tf.bench.common import add_json_argument, report_header, run_child, write_report
from sare_tf.bench.peak import add_peak_arguments, describe_efficiency, efficiency, peak_for
from sare_tf.registry import BACKBONE_NAMES, LOSS_NAMES

HELP = "Training-step tuples/s of the SARE tuple model, float32 vs mixed_bfloat16."
DESCRIPTION = __doc__

TARGET_TUPLES_PER_SECOND = {"mixed_bfloat16": 0.8}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        help="Keras dtype policies to compare (default: float32 mixed_bfloat16)",
    )
    parser.add_argument(
        "--backbone",
        default="vgg16",
        choices=BACKBONE_NAMES,
        help="backbone (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=[480, 640],
        metavar=("H", "W"),
        help="image size (default: 480 640)",
    )
    parser.add_argument(
        "--num-negatives", type=int, default=10, help="negatives per tuple (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-tuples", type=int, default=1, help="tuples per step (default: %(default)s)"
    )
    parser.add_argument(
        "--num-clusters", type=int, default=64, help="NetVLAD K (default: %(default)s)"
    )
    parser.add_argument(
        "--trainable-from",
        default="default",
        help="first trainable layer ('default': block5_conv1 for VGG16; 'all': everything)",
    )
    parser.add_argument(
        "--loss", default="sare-joint", choices=LOSS_NAMES, help="loss name (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps (tracing) (default: %(default)s)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default: %(default)s)")
    add_peak_arguments(parser)
    add_json_argument(parser, "training")
    parser.add_argument("--child-precision", default=None, help=argparse.SUPPRESS)


def run_child_measurement(args: argparse.Namespace) -> dict:
    """Builds, warms up and times the training step in this process (run it in a fresh one)."""
    import keras
    import numpy as np

    import sare_tf
    from sare_tf.bench.flops import embedding_conv_flops
    from sare_tf.losses import get_loss
    from sare_tf.models import build_embedding_model, build_tuple_model, netvlad_layer

    policy = sare_tf.set_precision(args.child_precision, force=True)
    height, width = args.image_size
    trainable_from = None if args.trainable_from == "all" else args.trainable_from
    embedding = build_embedding_model(
        args.backbone,
        num_clusters=args.num_clusters,
        weights=None,
        trainable_from=trainable_from,
    )
    layer = netvlad_layer(embedding)
    rng = np.random.default_rng(0)
    layer.set_centroids(rng.normal(size=(args.num_clusters, layer.depth)), alpha=10.0)
    model = build_tuple_model(embedding, args.num_negatives)
    model.compile(
        keras.optimizers.SGD(1e-3, momentum=0.9, weight_decay=1e-3),
        loss=get_loss(args.loss),
        jit_compile=False,
    )
    shape = (args.batch_tuples, 2 + args.num_negatives, height, width, 3)
    images = rng.uniform(0, 255, size=shape).astype("float32")
    targets = np.zeros(args.batch_tuples, "float32")

    start = time.perf_counter()
    for _ in range(args.warmup):
        model.train_on_batch(images, targets)
    warmup_seconds = time.perf_counter() - start
    step_seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model.train_on_batch(images, targets)
        step_seconds.append(time.perf_counter() - start)
    mean = float(np.mean(step_seconds))
    # Counted after the timing on a second build at a fixed input size (the timed model takes
    # any size, so its layers carry no static output shapes).
    flops = embedding_conv_flops(args.backbone, (height, width), args.num_clusters, trainable_from)
    return {
        "precision": policy,
        "backbone": args.backbone,
        "image_size": [height, width],
        "images_per_tuple": 2 + args.num_negatives,
        "batch_tuples": args.batch_tuples,
        "trainable_weights": len(model.trainable_weights),
        "descriptor_dim": int(embedding.output_shape[-1]),
        "warmup_seconds": round(warmup_seconds, 2),
        "step_seconds": [round(s, 3) for s in step_seconds],
        "tuples_per_second": round(args.batch_tuples / mean, 3),
        "images_per_second": round(args.batch_tuples * (2 + args.num_negatives) / mean, 2),
        "loss": float(loss),
        "target_tuples_per_second": TARGET_TUPLES_PER_SECOND.get(policy),
        "conv_flops_per_image": flops["flops"],
        "trainable_conv_flops_per_image": flops["trainable_flops"],
    }


def _efficiency_lines(result: dict, peaks: dict | None) -> list[str]:
    """Sets the result's "forward" and "with_backward_estimate" entries; returns their lines."""
    images_per_second = result["images_per_second"]
    forward = result["conv_flops_per_image"]
    backward = 2 * result["trainable_conv_flops_per_image"]
    result["forward"] = efficiency(images_per_second * forward, result["precision"], peaks)
    result["with_backward_estimate"] = efficiency(
        images_per_second * (forward + backward), result["precision"], peaks
    )
    return [
        describe_efficiency(
            f"{result['precision']} forward only",
            f"{images_per_second:.2f} img/s x {forward / 1e9:.4g} GFLOP",
            result["forward"],
        ),
        describe_efficiency(
            f"{result['precision']} with backward (est.)",
            f"+ 2 x {result['trainable_conv_flops_per_image'] / 1e9:.4g} GFLOP/img of "
            "trainable convs",
            result["with_backward_estimate"],
        ),
    ]


def run(args: argparse.Namespace) -> int:
    if args.child_precision is not None:
        print(json.dumps(run_child_measurement(args)))
        return 0
    report = report_header("training")
    peaks = peak_for(args, args.precisions)
    results = []
    for precision in args.precisions:
        flags = [
            "--child-precision", precision,
            "--backbone", args.backbone, "--image-size", *map(str, args.image_size),
            "--num-negatives", str(args.num_negatives), "--batch-tuples", str(args.batch_tuples),
            "--num-clusters", str(args.num_clusters), "--trainable-from", args.trainable_from,
            "--loss", args.loss, "--warmup", str(args.warmup), "--steps", str(args.steps),
        ]  # fmt: skip
        print(f"running {precision} ...", file=sys.stderr, flush=True)
        results.append(run_child("training", flags))

    print(
        f"{'precision':<15} {'size':>9} {'tuple':>5} {'B':>2} {'s/step':>8} "
        f"{'tuples/s':>9} {'img/s':>7} {'target':>7}"
    )
    for r in results:
        target = r["target_tuples_per_second"]
        print(
            f"{r['precision']:<15} {r['image_size'][0]:>4}x{r['image_size'][1]:<4} "
            f"{r['images_per_tuple']:>5} {r['batch_tuples']:>2} "
            f"{sum(r['step_seconds']) / len(r['step_seconds']):>8.2f} "
            f"{r['tuples_per_second']:>9.3f} {r['images_per_second']:>7.2f} "
            f"{('>=' + str(target)) if target else '-':>7}"
        )
    for r in results:
        for line in _efficiency_lines(r, peaks):
            print(line)
    report.update(peak=peaks, results=results)
    write_report(args.json, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    from sare_tf.bench.common import standalone_main

    return standalone_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
