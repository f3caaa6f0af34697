"""`sare-tf serve`: descriptors and localization over TF Serving's REST API."""

from __future__ import annotations

import argparse
import os

from sare_tf.commands._runtime_flag import MODEL_HELP, add_runtime_argument

HELP = "serve a model (and a place index) over TF Serving's REST API, following new versions"
DESCRIPTION = """\
Serves MODEL as NAME with TF Serving's REST API (also KServe's v1 protocol): POST
/v1/models/NAME[/versions/N|/labels/L]:predict with {"signature_name": "serve_jpeg",
"instances": [{"image_bytes": {"b64": ...}}]} or "serving_default" pixels; GET
/v1/models/NAME[/versions/N|/labels/L][/metadata]. With --index, also NAME-localize: photos in,
matches, position and confidence out. A TF Serving base path (numbered versions) is followed:
a new version is loaded and warmed up beside the old one and switched in without dropping a
request; so is a new generation of the index (sare-tf index add). Concurrent requests share
model calls; beyond --max-in-flight and --max-queued, requests get HTTP 503 with Retry-After.
SIGTERM: requests in flight finish, then the process exits with code 0. Binds 127.0.0.1
unless --host is given. Needs the serve extra: pip install -e ".[serve]"."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    add_runtime_argument(parser)
    parser.add_argument(
        "--name", default=None, help="model name in URLs (default: the model's folder name)"
    )
    parser.add_argument("--index", default=None, help="a place index: also serve NAME-localize")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8501, help="HTTP port (default 8501)")
    versions = parser.add_argument_group("versions (a TF Serving base path of numbered versions)")
    versions.add_argument(
        "--version-policy", default="latest", choices=("latest", "specific", "all"),
        help="serve the --num-versions highest (default), the --versions listed, or all",
    )  # fmt: skip
    versions.add_argument(
        "--num-versions", type=int, default=1, help="with --version-policy latest (default 1)"
    )
    versions.add_argument(
        "--versions", type=int, nargs="+", default=(), metavar="V",
        help="with --version-policy specific: the versions to serve",
    )  # fmt: skip
    versions.add_argument(
        "--version-label", action="append", default=[], metavar="LABEL=V",
        help="name a version, e.g. stable=1 (URLs /v1/models/NAME/labels/stable:predict); repeatable",
    )  # fmt: skip
    versions.add_argument(
        "--poll-seconds", type=float, default=2.0,
        help="look for new versions and index generations this often (default 2; 0: never)",
    )  # fmt: skip
    load = parser.add_argument_group("batching and load bounds")
    load.add_argument(
        "--max-batch", type=int, default=16, help="images per model call at most (default 16)"
    )
    load.add_argument(
        "--batch-wait-ms", type=float, default=5.0,
        help="how long a request waits for others to share its model call (default 5)",
    )  # fmt: skip
    load.add_argument(
        "--max-in-flight", type=int, default=32, help="requests at work at once (default 32)"
    )
    load.add_argument(
        "--max-queued", type=int, default=64,
        help="requests waiting for a slot at once; more get HTTP 503 at once (default 64)",
    )  # fmt: skip
    load.add_argument(
        "--queue-timeout-ms", type=float, default=1000.0,
        help="a waiting request gets HTTP 503 after this long (default 1000)",
    )  # fmt: skip
    load.add_argument(
        "--max-request-mb", type=float, default=32.0, help="larger request bodies get HTTP 413"
    )
    load.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="larger images are refused (HTTP 400)"
    )
    load.add_argument(
        "--max-instances", type=int, default=64, help="more images per request are refused"
    )
    load.add_argument(
        "--grace-seconds", type=float, default=30.0,
        help="after SIGTERM, how long requests in flight may take to finish (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--predictor-url",
        default=None,
        help="compute descriptors on this TF Serving predictor (e.g. http://predictor/v1/models/"
        "city:predict) instead of in this process: KServe's transformer / predictor split",
    )


def default_name(model_path: str) -> str:
    """The URL name of a model path: `saved_models/city` and `saved_models/city/3` -> city,
    `runs/x/best.keras` -> best, an export's `city/2/model.onnx` -> city."""
    import re

    from sare_tf.artifacts.versions import version_label

    path = os.path.normpath(os.path.abspath(model_path))
    if os.path.isfile(path) and not path.endswith(".keras"):
        path = os.path.dirname(path)  # an export's model file: its version folder
    return re.sub(r"[^A-Za-z0-9_.-]", "_", version_label(path).split("/")[0]) or "model"


def run(args: argparse.Namespace) -> int:
    try:
        from sare_tf.serving.server import ServeSettings, serve
        from sare_tf.serving.version_policy import VersionPolicy, parse_labels
    except ImportError as error:
        raise ValueError(
            f'sare-tf serve needs the serve extra: pip install -e ".[serve]" ({error})'
        ) from None
    if not os.path.exists(args.model):
        raise FileNotFoundError(f"Model not found. Received: --model {args.model}")
    settings = ServeSettings(
        host=args.host, port=args.port,
        policy=VersionPolicy(args.version_policy, args.num_versions, tuple(args.versions)),
        labels=parse_labels(args.version_label), poll_seconds=args.poll_seconds,
        max_batch=args.max_batch, max_wait_ms=args.batch_wait_ms,
        max_in_flight=args.max_in_flight, max_queued=args.max_queued,
        queue_timeout_ms=args.queue_timeout_ms,
        max_request_bytes=int(args.max_request_mb * 2**20), max_pixels=args.max_pixels,
        max_instances=args.max_instances, grace_seconds=args.grace_seconds,
        runtime=args.runtime, predictor_url=args.predictor_url,
    )  # fmt: skip
    name = args.name or default_name(args.model)

    def announce(state):
        models = state.models
        line = (
            f"Serving {models.path} as {name!r} (versions {sorted(models.serving)}"
            + (f", following new ones: {models.policy.describe()}" if models.followed else "")
            + ")"
        )
        if state.localize is not None:
            line += (
                f" and {state.localize.name} (index generation {state.localize.generation}, "
                f"{state.localize.index.count} places)"
            )
        print(f"{line} on http://{args.host}:{args.port}/v1/models/{name}", flush=True)

    serve(args.model, name, args.index, settings, announce)
    return 0
