"""Importing a full-size pytorch-NetVlad / Patch-NetVLAD checkpoint: wall time, peak memory, agreement.

Writes a checkpoint of the real size with `torch.save` (VGG16 cropped at conv5_3, NetVLAD(64) on
512-d features, WPCA 32768 -> 4096: about 600 MB, random weights), imports it with
`sare-tf import` in a fresh process (wall time and peak resident memory of that process), and
compares the imported Keras model's descriptors with PyTorch's own forward pass of the source
architecture on a few images (cosine). Needs torch (the test extra installs it) to write the
checkpoint and run the source model; the import itself does not use torch.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from sare_tf.bench.common import (
    add_json_argument,
    peak_rss_gib,
    report_header,
    run_child,
    write_report,
)

HELP = "import a full-size NetVLAD + WPCA checkpoint: time, peak memory, descriptor agreement"
DESCRIPTION = __doc__
VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-clusters", type=int, default=64, help="NetVLAD K (default 64)")
    parser.add_argument("--pca-dim", type=int, default=4096, help="WPCA size (default 4096)")
    parser.add_argument(
        "--channels-divisor", type=int, default=1, help="divide VGG16's widths (tests: tiny)"
    )
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=[120, 160], metavar=("H", "W"),
        help="images compared with PyTorch's forward pass (default 120 160)",
    )  # fmt: skip
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_json_argument(parser, "import")


def _source_model(args):
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers, channels = [], 3
    for item in VGG16_CHANNELS:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            width = max(1, item // args.channels_divisor)
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    encoder = nn.Sequential(*layers[:-1])
    pool = nn.Module()
    pool.conv = nn.Conv2d(channels, args.num_clusters, kernel_size=(1, 1), bias=False)
    pool.centroids = nn.Parameter(
        nn.functional.normalize(torch.randn(args.num_clusters, channels), dim=1) * 0.5
    )
    with torch.no_grad():
        pool.conv.weight.copy_(20.0 * pool.centroids[:, :, None, None])
    model = nn.Module()
    model.add_module("encoder", encoder)
    model.add_module("pool", pool)
    model.add_module(
        "WPCA", nn.Sequential(nn.Conv2d(args.num_clusters * channels, args.pca_dim, 1))
    )
    return model


def _source_forward(model, images):
    """The sources' forward pass (pytorch-NetVlad's NetVLAD, Patch-NetVLAD's WPCA) in PyTorch."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0 - mean) / std
    with torch.no_grad():
        x = F.normalize(model.encoder(x), p=2, dim=1)
        n, c = x.shape[:2]
        soft = F.softmax(model.pool.conv(x).view(n, -1, x.shape[2] * x.shape[3]), dim=1)
        flat = x.view(n, c, -1)
        vlad = (
            torch.einsum("nkp,ncp->nkc", soft, flat)
            - soft.sum(-1)[:, :, None] * model.pool.centroids[None]
        )
        vlad = F.normalize(F.normalize(vlad, p=2, dim=2).view(n, -1), p=2, dim=1)
        out = model.WPCA(vlad[:, :, None, None]).view(n, -1)
        return F.normalize(out, p=2, dim=-1).numpy()


def _import_child(args) -> dict:
    from sare_tf.convert import import_checkpoint

    start = time.perf_counter()
    sidecar = import_checkpoint(
        os.path.join(args.workdir, "checkpoint.pth.tar"),
        os.path.join(args.workdir, "imported.keras"),
    )
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "peak_gib": peak_rss_gib(),
        "model": sidecar["model"],
    }


def run(args: argparse.Namespace) -> int:
    if args.child == "import":
        print(json.dumps(_import_child(args)))
        return 0
    import torch

    report = report_header("import")
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        model = _source_model(args)
        path = os.path.join(scratch, "checkpoint.pth.tar")
        start = time.perf_counter()
        torch.save({"epoch": 1, "state_dict": model.state_dict()}, path)
        size_mb = round(os.path.getsize(path) / 2**20, 1)
        print(f"wrote a {size_mb} MB checkpoint in {time.perf_counter() - start:.1f} s", flush=True)
        flags = [
            "--workdir",
            scratch,
            "--child",
            "import",
            "--num-clusters",
            str(args.num_clusters),
        ]
        imported = run_child("import_checkpoint", flags)
        import keras

        import sare_tf.layers  # noqa: F401

        rng = np.random.default_rng(0)
        images = (rng.random((3, *args.image_size, 3)) * 255).astype(np.float32)
        keras_model = keras.saving.load_model(
            os.path.join(scratch, "imported.keras"), compile=False
        )
        got = keras.ops.convert_to_numpy(keras_model(images))
        want = _source_forward(model, images)
    cosine = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    results = {
        "checkpoint_mb": size_mb, "import_seconds": imported["seconds"],
        "import_peak_gib": imported["peak_gib"], "model": imported["model"],
        "cosine_min": float(cosine.min()), "image_size": list(args.image_size),
    }  # fmt: skip
    print(
        f"import of the {size_mb} MB checkpoint: {imported['seconds']} s, peak "
        f"{imported['peak_gib']} GiB; descriptor cosine to PyTorch's forward pass >= "
        f"{cosine.min():.6f} ({len(images)} images at {args.image_size[0]}x{args.image_size[1]})"
    )
    write_report(args.json, report, results=results)
    return 0
