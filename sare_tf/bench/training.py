"""Training-step throughput (tuples/s) of the SARE tuple model, beside PyTorch's same step.

One training step = forward of B tuples of 1 query + 1 positive + N negatives (B * (2 + N)
images at H x W), the joint SARE loss, the backward pass through the trainable layers (conv5
and NetVLAD by default, as in the paper) and an SGD update (momentum 0.9, weight decay 1e-3).
Images are random tensors already in memory, so the step measures the model, not decoding.
Each (framework, precision) runs in a fresh process (the dtype policy is global): build, one
warm-up step (tracing), then `--steps` timed steps; the median is kept.

PyTorch's reference (`--frameworks sare_tf torch`, the default; torch is the test extra) is the
same step written in PyTorch with the modules `sare-tf bench extraction` times (pytorch-NetVlad's
VGG16 `features[:-2]` + `NetVLAD`, frozen before conv5_1, or sare_tf's `tiny` in torch; the
joint Gaussian SARE loss; `torch.optim.SGD`; channels_last; `torch.autocast` for
mixed_bfloat16), on the same pixels. Each sare_tf row is printed as a ratio to PyTorch's.

The step is split the same way in both frameworks, from three timings on the same batch:
forward (images -> loss, no gradients), forward + backward (the gradients of the trainable
weights) and the whole step (+ the optimizer update): backward and optimizer are the
differences. Besides the step:
- input pipeline: `make_tuple_dataset` on a synthetic city whose JPEGs are H x W, tuples/s
  (`--pipeline`); above the step's rate it is not the bottleneck;
- mining: a full refresh encodes the training queries and the database (inference img/s,
  measured in the same child) every `--refresh-every` queries; its share of an epoch of
  `--epoch-queries` queries over `--db-images` images is estimated from the measured rates
  (mining's faiss search is separate: `sare-tf bench mining`).

Against the hardware: the forward convolutions of the B * (2 + N) images divided by the step
time give a lower bound of the GFLOP/s achieved, as a share of this CPU's measured conv peak in
the same dtype (`sare-tf bench peak`; measured first unless `--no-peak` or `--peak-json`).

`ONEDNN_MAX_CPU_ISA=AVX2 sare-tf bench training` caps TF's and PyTorch's kernels at AVX2 (no
AVX-512, no native bf16) to see how such a CPU fares; the clock and memory stay this machine's.

Usage:
    sare-tf bench training                          # 480x640, N=10, B=1, f32 + bf16, + peak
    sare-tf bench training --precisions float32 --backbone tiny --image-size 64 128 \
        --batch-tuples 4 --refresh-every 800 --no-peak    # the tiny-backbone recipe's step
    sare-tf bench training --image-size 120 160 --steps 2 --no-peak   # quick check
    sare-tf bench training --jit-compile            # sare_tf's step compiled with XLA
    sare-tf bench training --precisions float32 --repeats 3 --no-peak   # A B A B A B
    sare-tf bench training --json runs/bench/training.json

Target (2-core CPU): >= 0.8 tuples/s in mixed_bfloat16 at 480x640, N=10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from sare_tf.bench.common import (
    add_json_argument,
    add_repeats_argument,
    describe_ratios_by_repeat,
    ratios_by_repeat,
    report_header,
    run_child,
    write_report,
)
from sare_tf.bench.peak import add_peak_arguments, describe_efficiency, efficiency, peak_for
from sare_tf.registry import BACKBONE_NAMES, LOSS_NAMES

HELP = "Training-step tuples/s of the SARE tuple model, beside PyTorch's same step."
DESCRIPTION = __doc__

TARGET_TUPLES_PER_SECOND = {"mixed_bfloat16": 0.8}
FRAMEWORKS = ("sare_tf", "torch")
# The backbones and the loss PyTorch's reference step has (`sare_tf.bench.torch_models`).
TORCH_BACKBONES, TORCH_LOSS = ("vgg16", "tiny"), "sare-joint"
SGD = {"learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 1e-3}
PARTS = ("forward", "forward_backward", "step")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precisions", nargs="+", default=["float32", "mixed_bfloat16"],
        help="Keras dtype policies to compare (default: float32 mixed_bfloat16)",
    )  # fmt: skip
    parser.add_argument(
        "--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS,
        help="sare_tf and PyTorch's reference of the same step (default both)",
    )  # fmt: skip
    parser.add_argument(
        "--backbone", default="vgg16", choices=BACKBONE_NAMES,
        help="backbone (default: %(default)s; PyTorch's reference: vgg16 or tiny)",
    )  # fmt: skip
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"),
        help="image size (default: 480 640)",
    )  # fmt: skip
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
        "--trainable-from", default="default",
        help="first trainable layer ('default': block5_conv1 for VGG16; 'all': everything)",
    )  # fmt: skip
    parser.add_argument(
        "--loss", default="sare-joint", choices=LOSS_NAMES, help="loss name (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps (tracing) (default: %(default)s)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default: %(default)s)")
    add_repeats_argument(parser)
    parser.add_argument(
        "--jit-compile", action="store_true", help="compile sare_tf's step with XLA"
    )
    parser.add_argument(
        "--pipeline", action=argparse.BooleanOptionalAction, default=True,
        help="also time the tuple pipeline on JPEGs of this size (default on)",
    )  # fmt: skip
    parser.add_argument(
        "--epoch-queries", type=int, default=7416,
        help="training queries per epoch, for the mining share (default: Pitts30k's 7416)",
    )  # fmt: skip
    parser.add_argument(
        "--db-images", type=int, default=10000,
        help="database images a refresh encodes (default: Pitts30k train's 10000)",
    )  # fmt: skip
    parser.add_argument(
        "--refresh-every", type=int, default=1000,
        help="training queries between mining refreshes (default: the paper's 1000)",
    )  # fmt: skip
    add_peak_arguments(parser)
    add_json_argument(parser, "training")
    parser.add_argument("--child-precision", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-framework", default=None, help=argparse.SUPPRESS)


def _timed_calls(function, value, warmup: int, steps: int) -> tuple[list[float], float]:
    """`(seconds of each timed call, warm-up seconds)` of `function(value)`."""
    start = time.perf_counter()
    for _ in range(warmup):
        function(value)
    warmup_seconds = time.perf_counter() - start
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        function(value)
        seconds.append(time.perf_counter() - start)
    return seconds, warmup_seconds


def _random_batch(args):
    import numpy as np

    height, width = args.image_size
    shape = (args.batch_tuples, 2 + args.num_negatives, height, width, 3)
    return np.random.default_rng(0).uniform(0, 255, size=shape).astype("float32")


def _sare_tf_functions(args):
    """`(functions by part, inference function, policy)` of sare_tf's step."""
    import keras
    import numpy as np
    import tensorflow as tf

    import sare_tf
    from sare_tf.losses import get_loss
    from sare_tf.models import build_embedding_model, build_tuple_model, netvlad_layer

    policy = sare_tf.set_precision(args.child_precision, force=True)
    trainable_from = None if args.trainable_from == "all" else args.trainable_from
    embedding = build_embedding_model(
        args.backbone, num_clusters=args.num_clusters, weights=None, trainable_from=trainable_from
    )
    layer = netvlad_layer(embedding)
    layer.set_centroids(
        np.random.default_rng(0).normal(size=(args.num_clusters, layer.depth)), 10.0
    )
    model = build_tuple_model(embedding, args.num_negatives)
    loss = get_loss(args.loss)
    model.compile(keras.optimizers.SGD(**SGD), loss=loss, jit_compile=args.jit_compile)
    targets = tf.zeros([args.batch_tuples])

    @tf.function(jit_compile=args.jit_compile)
    def forward(x):
        return loss(targets, model(x, training=True))

    @tf.function(jit_compile=args.jit_compile)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            value = loss(targets, model(x, training=True))
        return tape.gradient(value, model.trainable_variables)

    infer = tf.function(lambda x: embedding(x, training=False))
    functions = {
        "forward": lambda x: forward(x).numpy(),
        "forward_backward": lambda x: [g.numpy() for g in forward_backward(x)],
        "step": lambda x: model.train_on_batch(x, targets),
    }
    return functions, lambda x: infer(x).numpy(), policy


def _torch_functions(args):
    """`(functions by part, inference function, policy)` of PyTorch's same step."""
    import torch

    from sare_tf.bench import torch_models

    torch.set_num_threads(os.cpu_count() or 1)
    features, pool = torch_models.build_embedding(torch, args.backbone, args.num_clusters)
    if args.backbone == "vgg16" and args.trainable_from == "default":
        torch_models.vgg16_trainable_from_conv5(torch, features)
    model = torch.nn.Sequential(features, pool).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=SGD["learning_rate"],
        momentum=SGD["momentum"], weight_decay=SGD["weight_decay"],
    )  # fmt: skip
    bf16 = args.child_precision == "mixed_bfloat16"

    def loss_of(x):
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            descriptors = model(torch_models.imagenet_normalize(torch, x)).float()
        return torch_models.sare_joint_loss(
            torch, descriptors.view(args.batch_tuples, -1, descriptors.shape[-1])
        )

    def forward(x):
        with torch.no_grad():
            return float(loss_of(x))

    def forward_backward(x):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(x)
        loss.backward()
        return float(loss)

    def step(x):
        loss = forward_backward(x)
        optimizer.step()
        return loss

    def infer(x):
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(torch_models.imagenet_normalize(torch, x)).float().numpy()

    functions = {"forward": forward, "forward_backward": forward_backward, "step": step}
    return functions, infer, args.child_precision


def _torch_images(images):
    import torch

    height, width = images.shape[2:4]
    flat = images.reshape(-1, height, width, 3).transpose(0, 3, 1, 2).copy()
    return torch.from_numpy(flat).contiguous(memory_format=torch.channels_last)


def run_child_measurement(args: argparse.Namespace) -> dict:
    """Builds, warms up and times one framework's step in this process (a fresh one)."""
    from sare_tf.bench.flops import embedding_conv_flops

    images = _random_batch(args)
    if args.child_framework == "torch":
        functions, infer, policy = _torch_functions(args)
        batch, eval_batch = _torch_images(images), _torch_images(images[:1])
    else:
        functions, infer, policy = _sare_tf_functions(args)
        batch, eval_batch = images, images[0]
    timings, warmup_seconds = {}, 0.0
    for part in PARTS:
        seconds, warm = _timed_calls(functions[part], batch, args.warmup, args.steps)
        timings[part], warmup_seconds = seconds, warmup_seconds + warm
    infer_seconds, _ = _timed_calls(infer, eval_batch, 1, args.steps)
    loss = functions["forward"](batch)
    step = statistics.median(timings["step"])
    images_per_tuple = 2 + args.num_negatives
    trainable_from = None if args.trainable_from == "all" else args.trainable_from
    flops = embedding_conv_flops(
        args.backbone, tuple(args.image_size), args.num_clusters, trainable_from
    )
    return {
        "framework": args.child_framework,
        "precision": policy,
        "backbone": args.backbone,
        "image_size": list(args.image_size),
        "images_per_tuple": images_per_tuple,
        "batch_tuples": args.batch_tuples,
        "jit_compile": bool(args.jit_compile) and args.child_framework == "sare_tf",
        "warmup_seconds": round(warmup_seconds, 2),
        "step_seconds": [round(s, 4) for s in timings["step"]],
        "split_seconds": _split(timings),
        "tuples_per_second": round(args.batch_tuples / step, 4),
        "images_per_second": round(args.batch_tuples * images_per_tuple / step, 3),
        "inference_images_per_second": round(
            images_per_tuple / statistics.median(infer_seconds), 3
        ),
        "loss": float(loss),
        "target_tuples_per_second": TARGET_TUPLES_PER_SECOND.get(policy),
        "conv_flops_per_image": flops["flops"],
        "trainable_conv_flops_per_image": flops["trainable_flops"],
    }


def _split(timings: dict) -> dict:
    """Median seconds of forward, backward and optimizer (differences of the nested timings)."""
    forward, with_backward, step = (statistics.median(timings[p]) for p in PARTS)
    return {
        "forward": round(forward, 4),
        "backward": round(max(with_backward - forward, 0.0), 4),
        "optimizer": round(max(step - with_backward, 0.0), 4),
        "step": round(step, 4),
    }


def measure_pipeline(args: argparse.Namespace) -> dict:
    """tuples/s of the tf.data tuple pipeline on a synthetic city of JPEGs at the image size."""
    from sare_tf.data import GeoDataset
    from sare_tf.data.tuples import MiningState, make_tuple_dataset, random_tuples
    from sare_tf.synthetic.city import make_synthetic_city

    size = tuple(args.image_size)
    with tempfile.TemporaryDirectory(prefix="sare-bench-pipeline-") as folder:
        mats = make_synthetic_city(
            folder, preset="tiny", seed=0, image_size=size, streets=(2, 1, 1)
        )
        dataset = GeoDataset.from_dbstruct(mats["train"])
        state = MiningState(dataset.num_queries, args.num_negatives, num_db=dataset.num_db)
        state.assign(*random_tuples(dataset, args.num_negatives, seed=0))
        pipeline = make_tuple_dataset(dataset, state, image_size=size, batch_size=args.batch_tuples)
        iterator = iter(pipeline.repeat())
        next(iterator)  # warm-up: tracing, thread pools, page cache
        batches = max(args.steps, 3)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        elapsed = time.perf_counter() - start
    return {"tuples_per_second": round(batches * args.batch_tuples / elapsed, 3)}


def mining_share(result: dict, args: argparse.Namespace) -> dict:
    """The estimated share of an epoch spent in full mining refreshes, from measured rates."""
    refreshes = max(1, round(args.epoch_queries / args.refresh_every))
    encode_seconds = (args.epoch_queries + args.db_images) / result["inference_images_per_second"]
    train_seconds = args.epoch_queries / result["tuples_per_second"]
    mining_seconds = refreshes * encode_seconds
    return {
        "refreshes_per_epoch": refreshes,
        "seconds_per_refresh": round(encode_seconds, 1),
        "epoch_training_seconds": round(train_seconds, 1),
        "share": round(mining_seconds / (mining_seconds + train_seconds), 4),
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
            f"{result['framework']} {result['precision']} forward only",
            f"{images_per_second:.2f} img/s x {forward / 1e9:.4g} GFLOP",
            result["forward"],
        ),
        describe_efficiency(
            f"{result['framework']} {result['precision']} with backward (est.)",
            f"+ 2 x {result['trainable_conv_flops_per_image'] / 1e9:.4g} GFLOP/img of "
            "trainable convs",
            result["with_backward_estimate"],
        ),
    ]


def _child_flags(args, framework: str, precision: str) -> list[str]:
    flags = [
        "--child-framework", framework, "--child-precision", precision,
        "--backbone", args.backbone, "--image-size", *map(str, args.image_size),
        "--num-negatives", str(args.num_negatives), "--batch-tuples", str(args.batch_tuples),
        "--num-clusters", str(args.num_clusters), "--trainable-from", args.trainable_from,
        "--loss", args.loss, "--warmup", str(args.warmup), "--steps", str(args.steps),
    ]  # fmt: skip
    return flags + (["--jit-compile"] if args.jit_compile else [])


def _frameworks(args) -> list[str]:
    """The frameworks to run; PyTorch's reference only where it has the backbone and loss."""
    if "torch" in args.frameworks and (
        args.backbone not in TORCH_BACKBONES or args.loss != TORCH_LOSS
    ):
        print(
            f"PyTorch's reference step has backbones {TORCH_BACKBONES} and the loss "
            f"{TORCH_LOSS!r} only: measuring sare_tf alone (backbone={args.backbone!r}, "
            f"loss={args.loss!r})."
        )
        return [f for f in args.frameworks if f != "torch"]
    return list(args.frameworks)


def _keep_fastest(fastest: dict, key, result: dict) -> None:
    """Keeps the fastest run of `key`, with every run's tuples/s in `tuples_per_second_by_repeat`."""
    by_repeat = fastest[key]["tuples_per_second_by_repeat"] if key in fastest else []
    by_repeat = [*by_repeat, result["tuples_per_second"]]
    if key not in fastest or result["tuples_per_second"] > fastest[key]["tuples_per_second"]:
        fastest[key] = result
    fastest[key]["tuples_per_second_by_repeat"] = by_repeat


def _ratios(results: list[dict]) -> None:
    """Sets each sare_tf row's `ratio_to_torch` (tuples/s over PyTorch's, same precision), and
    with several repeats `ratio_to_torch_by_repeat` (each repeat's runs, taken one after the
    other)."""
    torch_rows = {r["precision"]: r for r in results if r["framework"] == "torch"}
    for result in results:
        torch_row = torch_rows.get(result["precision"])
        if result["framework"] != "sare_tf" or torch_row is None:
            continue
        result["ratio_to_torch"] = round(
            result["tuples_per_second"] / torch_row["tuples_per_second"], 3
        )
        by_repeat = ratios_by_repeat(
            result["tuples_per_second_by_repeat"], torch_row["tuples_per_second_by_repeat"]
        )
        if by_repeat:
            result["ratio_to_torch_by_repeat"] = by_repeat


def _table(results: list[dict]) -> list[str]:
    lines = [
        f"{'framework':9} {'precision':15} {'size':>9} {'tuple':>5} {'B':>2} {'s/step':>8} "
        f"{'tuples/s':>9} {'fwd s':>7} {'bwd s':>7} {'opt s':>7} {'vs torch':>8}"
    ]
    for r in results:
        split, ratio = r["split_seconds"], r.get("ratio_to_torch")
        lines.append(
            f"{r['framework']:9} {r['precision']:15} {r['image_size'][0]:>4}x{r['image_size'][1]:<4} "
            f"{r['images_per_tuple']:>5} {r['batch_tuples']:>2} {split['step']:>8.3f} "
            f"{r['tuples_per_second']:>9.3f} {split['forward']:>7.3f} {split['backward']:>7.3f} "
            f"{split['optimizer']:>7.3f} {f'{ratio:.2f}x' if ratio else '-':>8}"
        )
    return lines


def _epoch_lines(results: list[dict], pipeline: dict | None, args) -> list[str]:
    lines = []
    for r in results:
        r["mining"] = mining_share(r, args)
        m = r["mining"]
        lines.append(
            f"{r['framework']} {r['precision']}: inference {r['inference_images_per_second']:.2f} img/s; "
            f"a full mining refresh encodes {args.epoch_queries} + {args.db_images} images in "
            f"~{m['seconds_per_refresh']:.0f} s, {m['refreshes_per_epoch']} per epoch of "
            f"{args.epoch_queries} queries (every {args.refresh_every}) = {100 * m['share']:.0f}% of "
            f"the epoch (training steps {m['epoch_training_seconds']:.0f} s)"
        )
    if pipeline is not None:
        fastest = max((r["tuples_per_second"] for r in results), default=0.0)
        verdict = (
            "not the bottleneck" if pipeline["tuples_per_second"] > fastest else "THE BOTTLENECK"
        )
        lines.append(
            f"input pipeline (JPEG decode + resize, {args.image_size[0]}x{args.image_size[1]}): "
            f"{pipeline['tuples_per_second']:.2f} tuples/s against the fastest step's "
            f"{fastest:.3f}: {verdict}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    if args.child_precision is not None:
        if args.child_framework == "pipeline":
            print(json.dumps(measure_pipeline(args)))
        else:
            print(json.dumps(run_child_measurement(args)))
        return 0
    report = report_header("training")
    peaks = peak_for(args, args.precisions)
    fastest = {}
    for repeat in range(args.repeats):
        for precision in args.precisions:
            for framework in _frameworks(args):
                of = f" (repeat {repeat + 1} of {args.repeats})" if args.repeats > 1 else ""
                print(f"running {framework} {precision}{of} ...", file=sys.stderr, flush=True)
                result = run_child("training", _child_flags(args, framework, precision))
                _keep_fastest(fastest, (precision, framework), result)
    results = list(fastest.values())
    pipeline = None
    if args.pipeline:
        print("timing the input pipeline ...", file=sys.stderr, flush=True)
        pipeline = run_child("training", _child_flags(args, "pipeline", "float32"))
    _ratios(results)
    for line in _table(results) + _epoch_lines(results, pipeline, args):
        print(line)
    for r in results:
        if "ratio_to_torch_by_repeat" in r:
            print(
                f"{r['framework']} {r['precision']} vs torch "
                f"{describe_ratios_by_repeat(r['ratio_to_torch_by_repeat'])}; "
                "the table keeps the fastest run"
            )
        for line in _efficiency_lines(r, peaks):
            print(line)
    write_report(
        args.json, report, config={"repeats": args.repeats}, peak=peaks, results=results,
        pipeline=pipeline,
    )  # fmt: skip
    return 0
