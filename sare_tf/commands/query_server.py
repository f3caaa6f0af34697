"""`sare-tf query-server`: descriptors (or nearest database images) from a TF Serving endpoint."""

from __future__ import annotations

import argparse

HELP = "send images to a TF Serving REST endpoint; print descriptors or nearest database images"
DESCRIPTION = """\
Sends images to the REST predict API of TF Serving running a model exported by
`sare-tf export` (POST URL/v1/models/NAME:predict) and prints the descriptors, or, with
--db-descriptors and --db-list, the nearest database images of each query. With the default
signature serve_jpeg the files are sent as they are (base64 in the JSON body) and the server
decodes and resizes them exactly as training and evaluation do. Needs no TensorFlow."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        help="TF Serving REST address, e.g. http://localhost:8501 (or a full "
        ".../v1/models/NAME:predict URL)",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to describe")
    parser.add_argument(
        "--signature",
        default="serve_jpeg",
        choices=("serve_jpeg", "serving_default"),
        help="serve_jpeg sends the encoded files (default); serving_default sends decoded float "
        "pixels, one image per request",
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="TF Serving MODEL_NAME (default: the one model a sare-tf serve serves)",
    )
    parser.add_argument(
        "--model-version", type=int, default=None, help="a specific version (default: latest)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="serving_default only: resize with PIL (bilinear) before sending",
    )
    parser.add_argument(
        "--db-descriptors", default=None, metavar="NPY", help="[N, D] database descriptors (.npy)"
    )
    parser.add_argument(
        "--db-list",
        default=None,
        metavar="TXT",
        help="database image names, one per line, in the rows' order of --db-descriptors",
    )
    parser.add_argument(
        "--top-k", type=int, default=5, help="nearest database images to print (default 5)"
    )
    parser.add_argument("--top", dest="top_k", type=int, help=argparse.SUPPRESS)  # former name
    parser.add_argument("--out", default=None, help="save the descriptors [Q, D] to this .npy")
    parser.add_argument("--output", dest="out", help=argparse.SUPPRESS)  # its former name
    parser.add_argument("--batch-size", type=int, default=16, help="images per request")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")


def _read_pixels(path: str, image_size):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image_size is not None:
            height, width = image_size
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32)


def _read_db_list(path: str) -> list[str]:
    with open(path, encoding="utf-8") as file:
        return [line.strip() for line in file if line.strip()]


def run(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    from sare_tf import serving_client

    if (args.db_descriptors is None) != (args.db_list is None):
        raise ValueError(
            "--db-descriptors and --db-list go together. "
            f"Received: --db-descriptors={args.db_descriptors}, --db-list={args.db_list}"
        )
    for path in args.images:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image not found: {path}")
    db_desc = db_names = None
    if args.db_descriptors is not None:
        db_desc = np.load(args.db_descriptors)
        db_names = _read_db_list(args.db_list)
        if db_desc.ndim != 2 or db_desc.shape[0] != len(db_names):
            raise ValueError(
                f"{args.db_descriptors} holds {db_desc.shape} descriptors but {args.db_list} "
                f"names {len(db_names)} images; they must match row for row."
            )
    model_name = args.model_name
    if model_name is None and "/v1/models/" not in args.url:
        model_name = serving_client.served_model_name(args.url)
    url = serving_client.predict_url(args.url, model_name, args.model_version)
    if args.signature == "serve_jpeg":
        if args.image_size is not None:
            raise ValueError("--image-size applies to --signature serving_default only.")
        images = []
        for path in args.images:
            with open(path, "rb") as file:
                images.append(file.read())
    else:
        images = [_read_pixels(path, args.image_size) for path in args.images]
    descriptors = serving_client.predict(
        url, images, args.signature, batch_size=args.batch_size, timeout=args.timeout
    )
    if args.out:
        np.save(args.out, descriptors)
        print(
            f"Saved {descriptors.shape[0]} descriptors of {descriptors.shape[1]} dims to {args.out}"
        )
    if db_desc is None:
        for path, descriptor in zip(args.images, descriptors, strict=True):
            head = " ".join(f"{value:+.4f}" for value in descriptor[:4])
            print(
                f"{path}\tdim={descriptor.shape[0]}\tnorm={np.linalg.norm(descriptor):.4f}\t[{head} ...]"
            )
        return 0
    distances, indices = serving_client.nearest_database_images(descriptors, db_desc, args.top_k)
    for path, row_d, row_i in zip(args.images, distances, indices, strict=True):
        print(path)
        for rank, (distance, index) in enumerate(zip(row_d, row_i, strict=True), start=1):
            print(f"  {rank}\t{db_names[index]}\t{distance:.4f}")
    return 0
