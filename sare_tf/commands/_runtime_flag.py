"""`--runtime tf|onnx|litert`, shared by the commands that compute descriptors at scale."""

from __future__ import annotations

from sare_tf.registry import RUNTIME_KINDS

RUNTIMES = tuple(RUNTIME_KINDS)
MODEL_HELP = (
    ".keras file, SavedModel or TF Serving base path, or an ONNX / LiteRT export "
    "(sare-tf export --format onnx|litert)"
)


def add_runtime_argument(parser) -> None:
    parser.add_argument(
        "--runtime",
        default=None,
        choices=RUNTIMES,
        help="refuse a --model that is not this runtime's artefact: tf (.keras / SavedModel), "
        "onnx or litert (sare-tf export --format onnx|litert); default: whatever the path is",
    )
