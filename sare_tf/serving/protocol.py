"""TF Serving's REST request and response formats (API v1), as pure functions.

Request (`POST /v1/models/NAME:predict`), either
- row format: `{"signature_name": S, "instances": [{"image_bytes": {"b64": ...}}, ...]}` (or bare
  values for a signature of one input: `"instances": [{"b64": ...}]`), answered with
  `{"predictions": [...]}`; or
- columnar format: `{"signature_name": S, "inputs": {"image_bytes": [...]}}` (or
  `"inputs": [...]`), answered with `{"outputs": [...]}`.

`signature_name` defaults to "serving_default". sare_tf's signatures: `serve_jpeg` (input
`image_bytes`: encoded JPEG / PNG files, base64 under "b64") and `serving_default` (input
`image`: float RGB 0-255 pixels `[H][W][3]`). Both return the descriptor. Binary values are
`{"b64": "<base64>"}` as TF Serving requires for string tensors.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re

import numpy as np

SERVE_JPEG = "serve_jpeg"
SERVING_DEFAULT = "serving_default"
SIGNATURE_INPUTS = {SERVE_JPEG: "image_bytes", SERVING_DEFAULT: "image"}


class RequestError(ValueError):
    """A request the server refuses (HTTP 400); the message says what is wrong."""


def parse_body(body) -> dict:
    """The JSON object of a request body (bytes, str or an already decoded dict)."""
    if isinstance(body, dict):
        return body
    if isinstance(body, bytes | bytearray | str):
        try:
            decoded = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(f"The request body is not valid JSON: {error}") from None
        if isinstance(decoded, dict):
            return decoded
    raise RequestError("The request body must be a JSON object with 'instances' or 'inputs'.")


def parse_predict_request(body, max_instances: int = 64) -> tuple[str, str, list]:
    """`(signature_name, format, values)`: one value per instance of the signature's input.

    Args:
        body: the request body (JSON bytes or a decoded dict).
        max_instances: more instances in one request are refused.

    Returns:
        The signature name, "row" or "columnar", and the input values (still JSON values:
        `{"b64": ...}` dicts or nested pixel lists).

    Raises:
        RequestError: malformed JSON, an unknown signature, a missing or misnamed input.
    """
    request = parse_body(body)
    signature = request.get("signature_name", SERVING_DEFAULT)
    if signature not in SIGNATURE_INPUTS:
        raise RequestError(
            f"Unknown signature_name {signature!r}; this model serves {sorted(SIGNATURE_INPUTS)}."
        )
    input_name = SIGNATURE_INPUTS[signature]
    if ("instances" in request) == ("inputs" in request):
        raise RequestError("A predict request has exactly one of 'instances' or 'inputs'.")
    if "instances" in request:
        instances, layout = request["instances"], "row"
        if not isinstance(instances, list):
            raise RequestError("'instances' must be a list.")
        values = [
            _instance_value(item, input_name, number) for number, item in enumerate(instances)
        ]
    else:
        inputs, layout = request["inputs"], "columnar"
        if isinstance(inputs, dict):
            if set(inputs) != {input_name}:
                raise RequestError(
                    f"Signature {signature!r} takes one input {input_name!r}. "
                    f"Received inputs: {sorted(inputs)}"
                )
            inputs = inputs[input_name]
        if not isinstance(inputs, list):
            raise RequestError(f"'inputs' must be a list of {input_name!r} values.")
        values = inputs
    if not values:
        raise RequestError("The request holds no instance.")
    if len(values) > max_instances:
        raise RequestError(
            f"At most {max_instances} instances per request. Received: {len(values)}"
        )
    return signature, layout, values


def _instance_value(item, input_name: str, number: int):
    if isinstance(item, dict) and "b64" not in item:
        if set(item) != {input_name}:
            raise RequestError(
                f"Instance {number} must hold the input {input_name!r}. Received keys: {sorted(item)}"
            )
        return item[input_name]
    return item


def decode_b64(value, number: int) -> bytes:
    """The bytes of a `{"b64": "..."}` value (instance `number`, for the message)."""
    if not (isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)):
        raise RequestError(f'Instance {number}: encoded images are sent as {{"b64": "<base64>"}}.')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(f"Instance {number}: invalid base64 ({error}).") from None


def pixels_from_json(value, number: int, max_pixels: int) -> np.ndarray:
    """A `[H][W][3]` nested list of 0-255 values as float32 `[H, W, 3]`, checked."""
    try:
        pixels = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise RequestError(
            f"Instance {number}: 'image' must be a [H][W][3] array of numbers."
        ) from None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or min(pixels.shape[:2]) < 1:
        raise RequestError(
            f"Instance {number}: 'image' must be [H][W][3]. Received: {pixels.shape}"
        )
    if pixels.shape[0] * pixels.shape[1] > max_pixels:
        raise RequestError(f"Instance {number}: more than {max_pixels} pixels.")
    if not np.isfinite(pixels).all():
        raise RequestError(f"Instance {number}: 'image' holds non-finite values.")
    return pixels


def predict_response(outputs, layout: str) -> dict:
    """`{"predictions": [...]}` (row format) or `{"outputs": [...]}` (columnar)."""
    values = [np.asarray(o).tolist() if isinstance(o, np.ndarray) else o for o in outputs]
    return {"predictions": values} if layout == "row" else {"outputs": values}


_MODEL_PATH = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[A-Za-z0-9_-]+))?"
    r"(?P<tail>/metadata|:[A-Za-z]+)?"
)


@dataclasses.dataclass(frozen=True)
class ModelPath:
    """What `/v1/models/<path>` names: a model, a version or label, and `metadata` or a verb."""

    name: str
    version: int | None = None
    label: str | None = None
    metadata: bool = False
    verb: str | None = None


def parse_model_path(path: str) -> ModelPath:
    """`NAME[/versions/N | /labels/L][/metadata | :verb]` (TF Serving's URL forms).

    Raises:
        LookupError: a path of none of these forms.
    """
    match = _MODEL_PATH.fullmatch(path)
    if match is None:
        raise LookupError(
            f"Malformed request: /v1/models/{path} (expected /v1/models/NAME[/versions/N|"
            "/labels/LABEL][:predict|/metadata])"
        )
    tail = match["tail"] or ""
    return ModelPath(
        name=match["name"],
        version=int(match["version"]) if match["version"] else None,
        label=match["label"],
        metadata=tail == "/metadata",
        verb=tail[1:] if tail.startswith(":") else None,
    )


# TF Serving's ServableState names (`GET /v1/models/NAME` reports one per version).
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


def version_status(version: int, state: str, error_message: str = "") -> dict:
    """One entry of `model_version_status`; a failed version is END with an error."""
    return {
        "version": str(version),
        "state": state,
        "status": {
            "error_code": "UNKNOWN" if error_message else "OK",
            "error_message": error_message,
        },
    }


def status_response(entries) -> dict:
    """TF Serving's `GET /v1/models/NAME` answer: `{"model_version_status": [...]}`, newest first."""
    return {"model_version_status": sorted(entries, key=lambda e: -int(e["version"]))}


def error_body(message: str) -> dict:
    """TF Serving's error answer."""
    return {"error": message}


def _tensor_info(name: str, dtype: str, dims) -> dict:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in dims],
            "unknown_rank": False,
        },
        "name": name,
    }


def signature_defs(descriptor_dim: int | None) -> dict:
    """The two predict signatures every sare_tf model is served with, as TF Serving's
    `SignatureDef` JSON (sizes -1 where any size is taken)."""
    descriptor = _tensor_info("StatefulPartitionedCall:0", "DT_FLOAT", [-1, descriptor_dim or -1])
    predict = "tensorflow/serving/predict"
    return {
        SERVING_DEFAULT: {
            "inputs": {
                "image": _tensor_info("serving_default_image:0", "DT_FLOAT", [-1, -1, -1, 3])
            },
            "outputs": {"descriptor": descriptor},
            "method_name": predict,
        },
        SERVE_JPEG: {
            "inputs": {"image_bytes": _tensor_info("serve_jpeg_image_bytes:0", "DT_STRING", [-1])},
            "outputs": {"descriptor": descriptor},
            "method_name": predict,
        },
    }


def metadata_response(name: str, version: int, descriptor_dim: int | None) -> dict:
    """TF Serving's `GET /v1/models/NAME[/versions/N]/metadata` answer."""
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": signature_defs(descriptor_dim)}},
    }
