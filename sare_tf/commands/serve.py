"""`sare-tf serve`: descriptors and localization over TF Serving's REST API."""

from __future__ import annotations

import argparse
import os

from sare_tf.config_options import MODEL_HELP, add_config_arguments, config_from_args
from sare_tf.serving.settings import ServeSettings

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
    """What is served (`--model`, `--name`, `--index`), then one flag per `ServeSettings` field."""
    served = parser.add_argument_group("served")
    served.add_argument("--model", required=True, metavar="PATH", help=MODEL_HELP)
    served.add_argument(
        "--name", default=None, help="model name in URLs (default: the model's folder name)"
    )
    served.add_argument(
        "--index", default=None, metavar="DIR", help="a place index: also serve NAME-localize"
    )
    add_config_arguments(parser, ServeSettings)


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
        from sare_tf.serving.server import serve
    except ImportError as error:
        raise ValueError(
            f'sare-tf serve needs the serve extra: pip install -e ".[serve]" ({error})'
        ) from None
    if not os.path.exists(args.model):
        raise FileNotFoundError(f"Model not found. Received: --model {args.model}")
    settings = config_from_args(ServeSettings, args)
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
