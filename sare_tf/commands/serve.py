"""`sare-tf serve`: descriptors and localization over TF Serving's REST API (KServe)."""

from __future__ import annotations

import argparse

from sare_tf.commands._runtime_flag import MODEL_HELP, add_runtime_argument

HELP = "serve a model (and a place index) over TF Serving's REST API, on KServe's model server"
DESCRIPTION = """\
Serves MODEL as NAME: POST /v1/models/NAME:predict with TF Serving's JSON ({"signature_name":
"serve_jpeg", "instances": [{"image_bytes": {"b64": ...}}]} or "serving_default" pixels), GET
/v1/models/NAME. With --index, also NAME-localize: photos in, matches, position and confidence
out. Concurrent requests are batched into shared model calls. Binds 127.0.0.1 unless --host is
given. Needs the serve extra: pip install -e ".[serve]"."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    add_runtime_argument(parser)
    parser.add_argument("--name", default=None, help="model name in URLs (default: the model's)")
    parser.add_argument("--index", default=None, help="a place index: also serve NAME-localize")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8501, help="HTTP port (default 8501)")
    parser.add_argument(
        "--max-batch", type=int, default=16, help="images per model call at most (default 16)"
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to share its model call (default 5)",
    )
    parser.add_argument(
        "--max-request-mb", type=float, default=32.0, help="larger request bodies get HTTP 413"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="larger images are refused (HTTP 400)"
    )
    parser.add_argument(
        "--predictor-url",
        default=None,
        help="compute descriptors on this TF Serving predictor (e.g. http://predictor/v1/models/"
        "city:predict) instead of in this process: KServe's transformer / predictor split",
    )


def run(args: argparse.Namespace) -> int:
    import re

    from sare_tf.artifacts import check_runtime, load_descriptor_model
    from sare_tf.place_index import PlaceIndex

    try:
        from sare_tf.serving.server import serve
    except ImportError as error:
        raise ValueError(
            f'sare-tf serve needs the serve extra (KServe): pip install -e ".[serve]" ({error})'
        ) from None
    loaded = load_descriptor_model(args.model)
    check_runtime(args.runtime, loaded)
    if loaded.image_size is None:
        raise ValueError(
            f"{args.model} does not record its image size; serve_jpeg must resize photos to one "
            "size. Use a model trained or exported by sare-tf."
        )
    index = PlaceIndex.load(args.index) if args.index else None
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]", "_", loaded.name.split("/")[0])
    print(
        f"Serving {loaded.path} as {name!r}"
        + (f" and {name}-localize ({index.count} places)" if index else "")
        + f" on http://{args.host}:{args.port}/v1/models/{name}",
        flush=True,
    )
    serve(
        loaded, name, index, host=args.host, port=args.port, max_batch=args.max_batch,
        max_wait_ms=args.batch_wait_ms, max_request_bytes=int(args.max_request_mb * 2**20),
        max_pixels=args.max_pixels, predictor_url=args.predictor_url,
    )  # fmt: skip
    return 0
