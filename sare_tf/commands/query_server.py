"""`sare-tf query-server`: descriptors (or nearest database images) from a TF Serving endpoint."""

from __future__ import annotations

import argparse

from sare_tf.config_options import add_config_arguments, config_from_args
from sare_tf.serving.client_settings import QueryServerSettings

HELP = "send images to a TF Serving REST endpoint; print descriptors or nearest database images"
DESCRIPTION = """\
Sends images to the REST predict API of TF Serving running a model exported by
`sare-tf export` (POST URL/v1/models/NAME:predict) and prints the descriptors, or, with
--db-descriptors and --db-list, the nearest database images of each query. With the default
signature serve_jpeg the files are sent as they are (base64 in the JSON body) and the server
decodes and resizes them exactly as training and evaluation do. Needs no TensorFlow."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument per field of `QueryServerSettings`, and the former names of two flags."""
    add_config_arguments(parser, QueryServerSettings)
    parser.add_argument("--output", dest="out", help=argparse.SUPPRESS)
    parser.add_argument("--top", dest="top_k", type=int, help=argparse.SUPPRESS)


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

    settings = config_from_args(QueryServerSettings, args)
    for path in settings.images:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image not found: {path}")
    db_desc = db_names = None
    if settings.db_descriptors is not None:
        db_desc = np.load(settings.db_descriptors)
        db_names = _read_db_list(settings.db_list)
        if db_desc.ndim != 2 or db_desc.shape[0] != len(db_names):
            raise ValueError(
                f"{settings.db_descriptors} holds {db_desc.shape} descriptors but {settings.db_list} "
                f"names {len(db_names)} images; they must match row for row."
            )
    model_name = settings.model_name
    if model_name is None and "/v1/models/" not in settings.url:
        model_name = serving_client.served_model_name(settings.url)
    url = serving_client.predict_url(settings.url, model_name, settings.model_version)
    if settings.signature == "serve_jpeg":
        images = []
        for path in settings.images:
            with open(path, "rb") as file:
                images.append(file.read())
    else:
        images = [_read_pixels(path, settings.image_size) for path in settings.images]
    descriptors = serving_client.predict(
        url, images, settings.signature, batch_size=settings.batch_size, timeout=settings.timeout
    )
    if settings.out:
        np.save(settings.out, descriptors)
        print(
            f"Saved {descriptors.shape[0]} descriptors of {descriptors.shape[1]} dims to {settings.out}"
        )
    if db_desc is None:
        for path, descriptor in zip(settings.images, descriptors, strict=True):
            head = " ".join(f"{value:+.4f}" for value in descriptor[:4])
            print(
                f"{path}\tdim={descriptor.shape[0]}\tnorm={np.linalg.norm(descriptor):.4f}\t[{head} ...]"
            )
        return 0
    distances, indices = serving_client.nearest_database_images(
        descriptors, db_desc, settings.top_k
    )
    for path, row_d, row_i in zip(settings.images, distances, indices, strict=True):
        print(path)
        for rank, (distance, index) in enumerate(zip(row_d, row_i, strict=True), start=1):
            print(f"  {rank}\t{db_names[index]}\t{distance:.4f}")
    return 0
