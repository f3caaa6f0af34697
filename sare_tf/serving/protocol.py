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
import json

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


def model_status(name: str, version: int | str = 1, ready: bool = True) -> dict:
    """TF Serving's `GET /v1/models/NAME` answer (plus KServe's "name" and "ready")."""
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": "AVAILABLE" if ready else "LOADING",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ],
        "name": name,
        "ready": ready,
    }
