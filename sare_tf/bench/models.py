"""Today's models in sare_tf beside the same modules in PyTorch, in the same run on this CPU.

For each model (its authors' backbone, aggregator and resolution, random weights: speed does not
depend on them), one child process times sare_tf's `PlaceEmbedding` (a `tf.function`, float32 or
`--precision`), another PyTorch's module of the same architecture (`sare_tf.bench.torch_models`:
torch.inference_mode, channels_last for the CNNs, `torch.set_num_threads` = the cores), each the
best of `--rounds` rounds after a warm-up, on the same random pixels. The ratio sare_tf / PyTorch
says where sare_tf is slower. PyTorch is the test extra (`pip install -e ".[test]"`).

Usage:
    sare-tf bench models                                  # every model, batch 4
    sare-tf bench models --models boq-dinov2 megaloc --batch-size 2
    sare-tf bench models --precision mixed_bfloat16       # sare_tf side in bf16 (native bf16 CPUs)
"""

from __future__ import annotations

import argparse
import json
import os
import time

from sare_tf.bench.common import add_json_argument, report_header, run_child, write_report

HELP = "Today's models (ResNet / DINOv2 + GeM / BoQ / MegaLoc) img/s: sare_tf beside PyTorch."
DESCRIPTION = __doc__

# name: (backbone, aggregator settings, (height, width)) at the authors' resolution.
MODELS = {
    "cosplace-resnet18": ("resnet18", ("gem", {"output_dim": 512}), (512, 512)),
    "cosplace-resnet50": ("resnet50", ("gem", {"output_dim": 2048}), (512, 512)),
    "boq-resnet50": ("resnet50-layer3", ("boq", {"proj_channels": 512}), (384, 384)),
    "boq-dinov2": ("dinov2-vitb14", ("boq", {"proj_channels": 384}), (322, 322)),
    "megaloc": ("dinov2-vitb14-tokens", ("salad", {"output_dim": 8448}), (322, 322)),
}
FRAMEWORKS = ("sare_tf", "torch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=list(MODELS),
        help="models to measure (default all)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=4, help="images per pass (default 4)")
    parser.add_argument("--batches", type=int, default=2, help="batches per round (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds; the best is kept (default 2)"
    )
    parser.add_argument(
        "--precision", default="float32", help="sare_tf's dtype policy (default float32)"
    )
    add_json_argument(parser, "models")
    parser.add_argument("--model", help=argparse.SUPPRESS)  # child mode: one model
    parser.add_argument("--framework", choices=FRAMEWORKS, help=argparse.SUPPRESS)


def _images(args):
    import numpy as np

    height, width = MODELS[args.model][2]
    shape = (args.batch_size, height, width, 3)
    return np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)


def _best_rate(args, forward, images) -> float:
    forward(images)  # warm-up (graph tracing, oneDNN / torch kernel selection)
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.batches):
            forward(images)
        rates.append(args.batches * args.batch_size / (time.perf_counter() - start))
    return max(rates)


def measure_sare_tf(args) -> float:
    import keras
    import tensorflow as tf

    from sare_tf.layers import BoQ, GeM, Salad
    from sare_tf.model import PlaceEmbedding

    keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(0)
    backbone, (kind, settings), (height, width) = MODELS[args.model]
    layer = {"gem": GeM, "boq": BoQ, "salad": Salad}[kind](**settings, name=kind)
    model = PlaceEmbedding(backbone, aggregator=layer, input_shape=(height, width, 3))
    compiled = tf.function(lambda x: model(x, training=False), jit_compile=False)
    return _best_rate(args, lambda x: compiled(x).numpy(), tf.constant(_images(args)))


def _torch_model(torch, name: str):
    from sare_tf.bench import torch_models

    if name.startswith("cosplace"):
        depth = 18 if name.endswith("18") else 50
        return torch_models.build_geolocalization_net(
            torch, depth, MODELS[name][1][1]["output_dim"]
        )
    if name == "boq-resnet50":
        resnet = torch_models.resnet_features(torch, torch_models.build_resnet(torch, 50))
        backbone = torch.nn.Sequential(*list(resnet)[:-1])  # cropped after layer3
        return torch.nn.Sequential(backbone, torch_models.build_boq(torch, 1024, 512, 64, 2, 32))
    vit = torch_models.build_dinov2_vit(torch, dim=768, depth=12, heads=12)
    if name == "megaloc":
        return torch_models.build_megaloc(torch, vit, 64, 256, 256, 512, 8448)
    boq = torch_models.build_boq(torch, 768, 384, 64, 2, 32)

    class BoQDinov2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit, self.boq = vit, boq

        def forward(self, x):
            batch, _, height, width = x.shape
            tokens = self.vit(x)[:, 1:]
            return self.boq(tokens.permute(0, 2, 1).reshape(batch, -1, height // 14, width // 14))

    return BoQDinov2().eval()


def measure_torch(args) -> float:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = _torch_model(torch, args.model).eval()
    images = torch.from_numpy(_images(args).transpose(0, 3, 1, 2).copy())
    if not args.model.endswith(("dinov2", "megaloc")):
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def forward(x):
        with torch.inference_mode():
            return model(x)

    return _best_rate(args, forward, images)


def run(args: argparse.Namespace) -> int:
    if args.model:  # child
        measure = measure_sare_tf if args.framework == "sare_tf" else measure_torch
        print(json.dumps({"images_per_second": measure(args)}))
        return 0
    report = report_header("models")
    results = []
    print(
        f"{'model':18} {'size':9} {'sare_tf img/s':>14} {'torch img/s':>12} {'ratio':>6}  batch {args.batch_size}, sare_tf {args.precision}"
    )
    for name in args.models:
        rates = {}
        for framework in FRAMEWORKS:
            flags = ["--model", name, "--framework", framework, "--batch-size", str(args.batch_size),
                     "--batches", str(args.batches), "--rounds", str(args.rounds),
                     "--precision", args.precision]  # fmt: skip
            try:
                rates[framework] = run_child("models", flags)["images_per_second"]
            except ChildProcessError as error:
                rates[framework] = None
                print(f"{name}: {framework} failed: {str(error).strip().splitlines()[-1]}")
        ratio = rates["sare_tf"] / rates["torch"] if all(rates.values()) else None
        height, width = MODELS[name][2]
        results.append({"model": name, "image_size": [height, width], **rates, "ratio": ratio})
        print(
            f"{name:18} {height}x{width:<5} {rates['sare_tf'] or float('nan'):14.2f} "
            f"{rates['torch'] or float('nan'):12.2f} {ratio or float('nan'):6.2f}",
            flush=True,
        )
    config = {
        k: getattr(args, k) for k in ("models", "batch_size", "batches", "rounds", "precision")
    }
    write_report(args.json, report, config=config, results=results)
    return 0
