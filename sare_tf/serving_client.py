"""A small client for the REST predict API of TF Serving, for models exported by sare_tf.

Pure standard library plus numpy (no TensorFlow): builds the JSON body TF Serving's
`POST /v1/models/<name>[/versions/<v>]:predict` accepts, posts it with urllib and returns
the descriptors as a numpy array.

Request body for the `serve_jpeg` signature (row format, one object per image, binary values
base64-encoded under a `b64` key as the REST API requires for string tensors of bytes):

    {"signature_name": "serve_jpeg",
     "instances": [{"image_bytes": {"b64": "<base64 of the JPEG file>"}}, ...]}

and for `serving_default` (float32 RGB pixels in [0, 255], nested `[H][W][3]` lists):

    {"signature_name": "serving_default", "instances": [{"image": [[[r, g, b], ...], ...]}]}

The answer is `{"predictions": [[d_1, ..., d_D], ...]}` (one row per instance), or
`{"error": "<message>"}` with an HTTP error status.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

import numpy as np

SERVE_JPEG = "serve_jpeg"
SERVING_DEFAULT = "serving_default"
_INPUT_NAMES = {SERVE_JPEG: "image_bytes", SERVING_DEFAULT: "image"}
DEFAULT_MODEL_NAME = "sare_demo"


def predict_url(server_url: str, model_name: str | None = None, version: int | None = None) -> str:
    """The predict endpoint URL.

    Args:
        server_url: `http://host:8501` (TF Serving's REST port), or an URL that already names
            the model (`.../v1/models/<name>[/versions/<v>][:predict]`).
        model_name: the served model's name (TF Serving's `MODEL_NAME`), when the URL does
            not name it.
        version: a specific version (default: the latest TF Serving loaded).

    Returns:
        `http://host:port/v1/models/<name>[/versions/<v>]:predict`.

    Example:
        >>> predict_url("http://localhost:8501", "sare_demo")
        'http://localhost:8501/v1/models/sare_demo:predict'
    """
    parsed = urllib.parse.urlsplit(server_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(
            f"Expected an http(s) URL such as http://localhost:8501. Received: url={server_url!r}"
        )
    url = server_url.rstrip("/")
    if "/v1/models/" in parsed.path:
        return url if url.endswith(":predict") else f"{url}:predict"
    if not model_name:
        raise ValueError(
            f"The URL does not name a model and no model name was given. Received: url={server_url!r}"
        )
    url = f"{url}/v1/models/{urllib.parse.quote(model_name, safe='')}"
    if version is not None:
        url = f"{url}/versions/{int(version)}"
    return f"{url}:predict"


def served_model_name(server_url: str, timeout: float = 10.0) -> str:
    """The one descriptor model a `sare-tf serve` at `server_url` serves (its status page).

    Raises:
        ValueError: the server serves several models, or is not `sare-tf serve` (TF Serving has
            no list of its models: pass the name, which TF Serving's docker image calls "model").
    """
    url = f"{server_url.rstrip('/')}/v1/sare-tf/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            names = sorted(json.loads(answer.read())["models"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"{server_url} does not list its models (not sare-tf serve?): pass --model-name, "
            "the server's MODEL_NAME (TF Serving's docker image uses 'model')."
        ) from None
    if len(names) != 1:
        raise ValueError(f"{server_url} serves {names}: choose one with --model-name.")
    return names[0]


def encode_bytes(contents: bytes) -> dict:
    """TF Serving's JSON encoding of a binary string value: `{"b64": "<base64>"}`."""
    return {"b64": base64.b64encode(bytes(contents)).decode("ascii")}


def build_predict_request(images: Sequence, signature_name: str = SERVE_JPEG) -> dict:
    """The JSON body of a predict request for a batch of images.

    Args:
        images: for "serve_jpeg", the encoded files (`bytes`); for "serving_default", float
            `[H, W, 3]` RGB arrays in [0, 255], all of the same size (one request is one batch).
        signature_name: "serve_jpeg" or "serving_default".

    Returns:
        `{"signature_name": ..., "instances": [{<input name>: <value>}, ...]}`.
    """
    if signature_name not in _INPUT_NAMES:
        raise ValueError(
            f"Unknown signature. Expected one of {sorted(_INPUT_NAMES)}. "
            f"Received: signature_name={signature_name!r}"
        )
    if len(images) == 0:
        raise ValueError("A predict request needs at least one image. Received: images=[]")
    input_name = _INPUT_NAMES[signature_name]
    if signature_name == SERVE_JPEG:
        for index, image in enumerate(images):
            if not isinstance(image, bytes | bytearray):
                raise ValueError(
                    f"serve_jpeg takes encoded image files as bytes. Received: images[{index}] of "
                    f"type {type(image).__name__}"
                )
        values = [encode_bytes(image) for image in images]
    else:
        arrays = [np.asarray(image, dtype=np.float32) for image in images]
        shapes = {array.shape for array in arrays}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[-1] != 3:
            raise ValueError(
                "serving_default takes a batch of [H, W, 3] images of one size. "
                f"Received shapes: {sorted(shapes)}"
            )
        values = [array.tolist() for array in arrays]
    return {
        "signature_name": signature_name,
        "instances": [{input_name: value} for value in values],
    }


def parse_predictions(response: dict, output_name: str = "descriptor") -> np.ndarray:
    """Descriptors `[B, D]` float32 from a predict response (row or column format)."""
    if "predictions" in response:
        rows = response["predictions"]
    elif "outputs" in response:
        rows = response["outputs"]
        rows = rows[output_name] if isinstance(rows, dict) else rows
    else:
        raise ValueError(
            f"The predict response has no 'predictions'. Received keys: {sorted(response)}"
        )
    # With several named outputs TF Serving returns one object per instance.
    rows = [row[output_name] if isinstance(row, dict) else row for row in rows]
    descriptors = np.asarray(rows, dtype=np.float32)
    if descriptors.ndim != 2:
        raise ValueError(
            f"Expected one descriptor vector per image. Received an array of shape {descriptors.shape}"
        )
    return descriptors


def post_json(url: str, payload: dict, timeout: float = 60.0) -> dict:
    """POSTs `payload` as JSON and returns the decoded JSON answer.

    Raises:
        ValueError: the server answered with an HTTP error (its `error` message is included).
        OSError: the server could not be reached.
    """
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = answer.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise ValueError(f"TF Serving at {url} answered HTTP {error.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise OSError(f"Could not reach TF Serving at {url}: {reason}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError(
            f"TF Serving at {url} answered with non-JSON content: {body[:200]!r}"
        ) from None


def predict(
    url: str,
    images: Sequence,
    signature_name: str = SERVE_JPEG,
    batch_size: int = 16,
    timeout: float = 60.0,
) -> np.ndarray:
    """Descriptors of `images` from a TF Serving predict endpoint.

    Args:
        url: the predict URL (see `predict_url`).
        images: encoded files (`bytes`) for "serve_jpeg", float `[H, W, 3]` arrays for
            "serving_default" (one request per image then, since sizes may differ).
        signature_name: "serve_jpeg" or "serving_default".
        batch_size: images per request for "serve_jpeg".
        timeout: seconds per request.

    Returns:
        `[len(images), D]` float32 descriptors in the order of `images`.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive. Received: batch_size={batch_size}")
    step = batch_size if signature_name == SERVE_JPEG else 1
    parts = []
    for start in range(0, len(images), step):
        payload = build_predict_request(images[start : start + step], signature_name)
        descriptors = parse_predictions(post_json(url, payload, timeout=timeout))
        if descriptors.shape[0] != len(payload["instances"]):
            raise ValueError(
                f"Sent {len(payload['instances'])} images but received {descriptors.shape[0]} descriptors."
            )
        parts.append(descriptors)
    if not parts:
        raise ValueError("No images to send. Received: images=[]")
    return np.concatenate(parts, axis=0)


def nearest_database_images(query_desc, db_desc, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest neighbours by squared L2 distance, faiss-style `(D, I)`.

    Args:
        query_desc: `[Q, D]` query descriptors (xq).
        db_desc: `[N, D]` database descriptors (xb).
        k: neighbours per query (at most N).

    Returns:
        `D [Q, k]` squared distances ascending and `I [Q, k]` database indices.
    """
    xq = np.asarray(query_desc, dtype=np.float64)
    xb = np.asarray(db_desc, dtype=np.float64)
    if xq.ndim != 2 or xb.ndim != 2 or xq.shape[1] != xb.shape[1]:
        raise ValueError(
            "Query and database descriptors must be [Q, D] and [N, D] with the same D. "
            f"Received: {xq.shape} and {xb.shape}"
        )
    k = min(int(k), xb.shape[0])
    if k < 1:
        raise ValueError(f"`k` must be positive and the database non-empty. Received: k={k}")
    distances = np.sum(xq**2, axis=1)[:, None] - 2.0 * xq @ xb.T + np.sum(xb**2, axis=1)[None, :]
    distances = np.maximum(distances, 0.0)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, axis=1).astype(np.float32), order.astype(np.int64)
