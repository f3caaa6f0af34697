"""The HTTP server of `sare-tf serve`: TF Serving's REST API on KServe's Python model server.

Models served (KServe `Model`s, one process):
- `NAME`: the descriptor model, `POST /v1/models/NAME:predict` with the `serve_jpeg` or
  `serving_default` signature (see `protocol`), `GET /v1/models/NAME` (TF Serving's status).
- `NAME-localize` (with a place index): photos in, `PlaceIndex.localize` answers out:
  `{"instances": [{"image_bytes": {"b64": ...}}], "top_k": 10}` ->
  `{"predictions": [{"matches": [...], "position": [x, y], "confidence": c, ...}]}`.

Health: `GET /` (live), `GET /v2/health/ready`, `GET /v1/models/NAME`. Batching statistics:
`GET /v1/sare-tf/stats`.

Requests are checked before they reach the model: the body size (`max_request_bytes`, HTTP 413),
JSON, the signature and input names, base64, the image format and its pixel count
(`max_pixels`), the number of instances; each bad request gets a 4xx answer naming what is wrong,
and the server goes on serving. Encoded images are decoded with Pillow exactly as training and
evaluation read files (`sare_tf.data.images.decode_image_bytes`, EXIF orientation applied) and
resized to the model's image size with the same op.

KServe binds every address by default; `serve` binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import numpy as np

from sare_tf.serving.protocol import (
    SERVE_JPEG,
    RequestError,
    decode_b64,
    model_status,
    parse_body,
    parse_predict_request,
    pixels_from_json,
    predict_response,
)

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
LOCALIZE_SUFFIX = "-localize"


@contextlib.contextmanager
def _own_argv():
    """KServe parses `sys.argv` when imported; keep `sare-tf serve`'s flags away from it."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _kserve():
    with _own_argv():
        import kserve
        import kserve.model_server
        from kserve.errors import InvalidInput
        from kserve.protocol.rest.server import RESTServer
    return kserve, kserve.model_server, InvalidInput, RESTServer


class ImageDecoder:
    """Request values -> a float32 batch `[n, H, W, 3]` at the model's image size."""

    def __init__(self, image_size, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.image_size = None if image_size is None else tuple(image_size)
        self.max_pixels = max_pixels

    def __call__(self, signature: str, values) -> np.ndarray:
        from sare_tf.data.images import BadImageError, decode_image_bytes, resize_image

        images = []
        for number, value in enumerate(values):
            if signature == SERVE_JPEG:
                contents = decode_b64(value, number)
                try:
                    pixels = decode_image_bytes(
                        contents, f"instance {number}", self.image_size, self.max_pixels
                    )
                except BadImageError as error:
                    raise RequestError(str(error)) from None
                if self.image_size is not None:
                    pixels = np.asarray(resize_image(pixels, self.image_size))
                images.append(np.asarray(pixels, np.float32))
            else:
                images.append(pixels_from_json(value, number, self.max_pixels))
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            raise RequestError(
                f"All images of one request must have one size. Received sizes: {sorted(shapes)}"
            )
        return np.stack(images)


def _make_models(name, loaded, index, batcher, decoder, max_instances):
    kserve, _, InvalidInput, _ = _kserve()

    class DescriptorService(kserve.Model):
        """TF Serving's predict API for the descriptor model."""

        async def predict(self, payload, headers=None):
            try:
                signature, layout, values = parse_predict_request(payload, max_instances)
                images = await asyncio.get_running_loop().run_in_executor(
                    None, decoder, signature, values
                )
            except RequestError as error:
                raise InvalidInput(str(error)) from None
            return predict_response(list(await batcher.submit(images)), layout)

    class LocalizeService(kserve.Model):
        """Photos in, `PlaceIndex.localize` answers out."""

        async def predict(self, payload, headers=None):
            try:
                request = parse_body(payload)
                top_k = request.pop("top_k", 10)
                if not isinstance(top_k, int) or not 1 <= top_k <= 100:
                    raise RequestError(
                        f"'top_k' must be an integer in [1, 100]. Received: {top_k!r}"
                    )
                request.setdefault("signature_name", SERVE_JPEG)
                signature, layout, values = parse_predict_request(request, max_instances)
                if signature != SERVE_JPEG:
                    raise RequestError("The localize model takes encoded photos (serve_jpeg).")
                images = await asyncio.get_running_loop().run_in_executor(
                    None, decoder, signature, values
                )
            except RequestError as error:
                raise InvalidInput(str(error)) from None
            descriptors = await batcher.submit(images)
            return predict_response(index.localize(descriptors, k=top_k), layout)

    models = [DescriptorService(name)]
    if index is not None:
        models.append(LocalizeService(name + LOCALIZE_SUFFIX))
    for model in models:
        model.ready = True
    return models


def _add_routes(app, models, batcher, max_request_bytes: int) -> None:
    """sare_tf's routes and checks, registered before KServe's so that they take precedence."""
    from fastapi.responses import ORJSONResponse

    names = {model.name for model in models}

    @app.middleware("http")
    async def limit_body_size(request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_request_bytes):
            return ORJSONResponse(
                {"error": f"Request body larger than {max_request_bytes} bytes (or no valid "
                 f"Content-Length). Received: {length}"},
                status_code=413,
            )  # fmt: skip
        return await call_next(request)

    async def status(model_name: str, version: str | None = None):
        if model_name not in names:
            return ORJSONResponse(
                {"error": f"Model {model_name!r} is not served here. Served: {sorted(names)}"},
                status_code=404,
            )
        return model_status(model_name, version or 1)

    app.add_api_route("/v1/models/{model_name}", status, methods=["GET"])
    app.add_api_route("/v1/models/{model_name}/versions/{version}", status, methods=["GET"])
    app.add_api_route("/v1/sare-tf/stats", lambda: dict(batcher.stats), methods=["GET"])


def remote_describe_function(predictor_url: str, timeout: float = 60.0):
    """`images -> descriptors` computed by a TF Serving predictor (REST `serving_default`).

    This is the transformer / predictor split of KServe: the predictor (TF Serving, or another
    `sare-tf serve`) runs the SavedModel; this process decodes, batches, searches and answers.
    """
    from sare_tf.serving_client import parse_predictions, post_json

    def run(images):
        payload = {
            "signature_name": "serving_default",
            "instances": [{"image": image.tolist()} for image in images],
        }
        descriptors = parse_predictions(post_json(predictor_url, payload, timeout=timeout))
        if descriptors.shape[0] != len(images):
            raise RuntimeError(
                f"The predictor at {predictor_url} returned {descriptors.shape[0]} descriptors "
                f"for {len(images)} images."
            )
        return descriptors

    return run


def describe_function(loaded):
    """`images [B, H, W, 3] -> descriptors [B, D]` float32 numpy, for the batcher's thread."""
    import tensorflow as tf

    from sare_tf.encoding import descriptors_of, predict_fn

    predict = predict_fn(loaded.model)

    def run(images):
        return descriptors_of(predict(tf.constant(images, tf.float32)))

    return run


def make_server(
    loaded,
    name: str,
    index=None,
    host: str = "127.0.0.1",
    port: int = 8501,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_instances: int = 64,
    predictor_url: str | None = None,
):
    """A ready-to-run `uvicorn.Server` serving `loaded` (and `index`) on `host:port`.

    Args:
        loaded: the `DescriptorModel` (`load_descriptor_model`); its image size is used for
            encoded images.
        name: the model name in URLs (TF Serving's MODEL_NAME).
        index: a `PlaceIndex` to serve `NAME-localize` with (its model must be `loaded`).
        host, port: where to listen (127.0.0.1: this machine only).
        max_batch, max_wait_ms: micro-batching of concurrent requests (`MicroBatcher`).
        max_request_bytes: larger request bodies get HTTP 413.
        max_pixels: larger images are refused (HTTP 400).
        max_instances: more instances per request are refused.
        predictor_url: compute descriptors with this TF Serving predict URL instead of in this
            process (`loaded` still gives the image size and the fingerprint the index checks).
    """
    import uvicorn

    from sare_tf.serving.batching import MicroBatcher

    if index is not None:
        index.check_model(loaded)
    _, model_server, _, RESTServer = _kserve()
    describe = (
        remote_describe_function(predictor_url) if predictor_url else describe_function(loaded)
    )
    batcher = MicroBatcher(describe, max_batch, max_wait_ms)
    decoder = ImageDecoder(loaded.image_size, max_pixels)
    models = _make_models(name, loaded, index, batcher, decoder, max_instances)
    with _own_argv():
        server = model_server.ModelServer(http_port=port, enable_grpc=False, workers=1)
    for model in models:
        server.register_model(model)
    _add_routes(model_server.app, models, batcher, max_request_bytes)
    rest = RESTServer(
        "kserve.model_server:app", server.dataplane, server.model_repository_extension, port
    )
    rest.create_application()
    config = uvicorn.Config(
        model_server.app, host=host, port=port, log_config=None, timeout_keep_alive=65,
        access_log=False,
    )  # fmt: skip
    return uvicorn.Server(config)


def serve(loaded, name: str, index=None, **settings) -> None:
    """Runs the server until interrupted (see `make_server` for the settings)."""
    server = make_server(loaded, name, index, **settings)
    asyncio.run(server.serve())
