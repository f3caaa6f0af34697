"""Training-step throughput (tuples/s) of VGG16 + NetVLAD + SARE, float32 vs mixed_bfloat16.

One training step = forward of B tuples of 1 query + 1 positive + N negatives (B * (2 + N)
images at H x W), the SARE joint loss, the backward pass through the trainable layers (conv5
and NetVLAD by default, as in the paper) and an SGD update. Images are random tensors already
in memory, so this measures the model, not image decoding (the tuple pipeline has its own
benchmark). Each precision runs in a fresh process (the dtype policy is global): build,
one warm-up step (tracing), then `--steps` timed steps.

Usage:
    python scripts/bench_training.py                          # 480x640, N=10, B=1, f32 + bf16
    python scripts/bench_training.py --precisions mixed_bfloat16 --batch-tuples 2 --steps 5
    python scripts/bench_training.py --image-size 120 160 --steps 2   # quick check
    python scripts/bench_training.py --json runs/bench_training.json

Target (issue 5, 2-core CPU): >= 0.8 tuples/s in mixed_bfloat16 at 480x640, N=10.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TARGET_TUPLES_PER_SECOND = {"mixed_bfloat16": 0.8}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Training throughput of the SARE / NetVLAD tuple model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        help="Keras dtype policies to compare",
    )
    parser.add_argument("--backbone", default="vgg16", help="vgg16, resnet50 or tiny")
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"), help="size"
    )
    parser.add_argument("--num-negatives", type=int, default=10, help="negatives per tuple")
    parser.add_argument("--batch-tuples", type=int, default=1, help="tuples per step")
    parser.add_argument("--num-clusters", type=int, default=64, help="NetVLAD K")
    parser.add_argument(
        "--trainable-from",
        default="default",
        help="first trainable layer ('default': block5_conv1 for VGG16; 'all': everything)",
    )
    parser.add_argument("--loss", default="sare-joint", help="loss name")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (tracing)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--child-precision", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_child(args) -> dict:
    import keras
    import numpy as np

    import sare_tf
    from sare_tf.losses import get_loss
    from sare_tf.models import build_embedding_model, build_tuple_model, netvlad_layer

    policy = sare_tf.set_precision(args.child_precision, force=True)
    height, width = args.image_size
    embedding = build_embedding_model(
        args.backbone,
        num_clusters=args.num_clusters,
        weights=None,
        trainable_from=None if args.trainable_from == "all" else args.trainable_from,
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
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child_precision is not None:
        print(json.dumps(run_child(args)))
        return 0
    results = []
    for precision in args.precisions:
        command = [
            sys.executable, os.path.abspath(__file__), "--child-precision", precision,
            "--backbone", args.backbone, "--image-size", *map(str, args.image_size),
            "--num-negatives", str(args.num_negatives), "--batch-tuples", str(args.batch_tuples),
            "--num-clusters", str(args.num_clusters), "--trainable-from", args.trainable_from,
            "--loss", args.loss, "--warmup", str(args.warmup), "--steps", str(args.steps),
        ]  # fmt: skip
        print(f"running {precision} ...", file=sys.stderr, flush=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))

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
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as out:
            json.dump({"results": results}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
