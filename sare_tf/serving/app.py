"""The HTTP surface of `sare-tf serve`: TF Serving's REST API v1 (which is also KServe's v1
protocol), as a Starlette app over `ModelVersions` and `LocalizeIndex`.

URLs (TF Serving's forms; `NAME-localize` is the place index's model):
- `GET  /v1/models/NAME[/versions/N | /labels/L]`            version status
- `GET  /v1/models/NAME[/versions/N | /labels/L]/metadata`   signature defs
- `POST /v1/models/NAME[/versions/N | /labels/L]:predict`    descriptors / localize answers
- `POST ...:classify`, `...:regress`                          refused (predict signatures only)
- `GET  /v2/health/live`, `/v2/health/ready`                  probes; `GET /v1/sare-tf/status`:
  version transitions, index generations, batchers and load bounds.

Every error is TF Serving's `{"error": "..."}` with its HTTP code: 400 bad request, 404 unknown
model / version / label, 405 wrong method, 413 body too large, 503 overloaded (with
Retry-After). Admission (`Admission`) happens before the body is read. Clients see database
images by id and by the path relative to the images' folder, never the server's file system.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sare_tf.serving.admission import Admission, Overloaded
from sare_tf.serving.images import decode_images
from sare_tf.serving.protocol import (
    SERVE_JPEG,
    RequestError,
    error_body,
    metadata_response,
    parse_body,
    parse_model_path,
    parse_predict_request,
    predict_response,
    status_response,
)
from sare_tf.serving.servables import LocalizeIndex, ModelVersions, NotServed, check_top_k

logger = logging.getLogger(__name__)

LOCALIZE_SUFFIX = "-localize"
RETRY_AFTER_SECONDS = 1


DRAIN_FACTOR = 4


class BodyTooLarge(ValueError):
    """The request body exceeds the server's limit (HTTP 413)."""


@dataclasses.dataclass
class ServedState:
    """What the app serves and its request limits."""

    models: ModelVersions
    localize: LocalizeIndex | None
    admission: Admission
    max_request_bytes: int
    max_pixels: int
    max_instances: int

    def names(self) -> list[str]:
        return [self.models.name] + ([self.localize.name] if self.localize else [])

    def ready(self) -> bool:
        return bool(self.models.serving) and (
            self.localize is None or self.localize.index is not None
        )

    def report(self) -> dict:
        return {
            "models": {self.models.name: self.models.report()},
            "localize": {self.localize.name: self.localize.report()} if self.localize else {},
            "admission": {
                **self.admission.settings(),
                **self.admission.stats,
                "in_flight": self.admission.in_flight,
                "queued": self.admission.queued,
            },
            "limits": {
                "max_request_bytes": self.max_request_bytes,
                "max_pixels": self.max_pixels,
                "max_instances": self.max_instances,
            },
        }


def json_response(content, status_code: int = 200, headers=None) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def error_response(message: str, status_code: int, headers=None) -> Response:
    return json_response(error_body(message), status_code, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes (announced by Content-Length or not).

    A refused body is read on and dropped, up to `DRAIN_FACTOR` x `limit` bytes in all, before
    the 413 answer: a client still sending when the server closes gets a reset connection
    instead of the answer. Larger bodies are cut off at once.
    """
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        if length.isdigit() and int(length) <= DRAIN_FACTOR * limit:
            await _drain(request, DRAIN_FACTOR * limit)
        raise BodyTooLarge(
            f"Request body larger than {limit} bytes. Received Content-Length: {length}"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise BodyTooLarge(f"Request body larger than {limit} bytes.")
    return b"".join(chunks)


async def _drain(request: Request, budget: int) -> None:
    """Reads and drops the rest of the body, `budget` bytes at the most."""
    async for chunk in request.stream():
        budget -= len(chunk)
        if budget < 0:
            return


async def _describe(state: ServedState, servable, signature: str, values):
    loop = asyncio.get_running_loop()
    images = await loop.run_in_executor(
        None, decode_images, signature, values, servable.loaded.image_size, state.max_pixels
    )
    return await servable.batcher.submit(images)


def decode_json(body: bytes) -> dict:
    """The request's JSON object (orjson: several times faster than json on base64 bodies)."""
    try:
        return parse_body(orjson.loads(body))
    except orjson.JSONDecodeError as error:
        raise RequestError(f"The request body is not valid JSON: {error}") from None


async def _predict(state: ServedState, target, body: bytes):
    signature, layout, values = parse_predict_request(decode_json(body), state.max_instances)
    servable = state.models.resolve(target.version, target.label)
    with servable.use():
        descriptors = await _describe(state, servable, signature, values)
    return predict_response(list(descriptors), layout)


async def _localize(state: ServedState, target, body: bytes):
    request = dict(decode_json(body))
    top_k = check_top_k(request.pop("top_k", 10))
    request.setdefault("signature_name", SERVE_JPEG)
    signature, layout, values = parse_predict_request(request, state.max_instances)
    if signature != SERVE_JPEG:
        raise RequestError("The localize model takes encoded photos (serve_jpeg).")
    index, paths, servable = state.localize.resolve(target.version, target.label)
    with servable.use():
        descriptors = await _describe(state, servable, signature, values)
    answers = await asyncio.get_running_loop().run_in_executor(
        None, index.localize, descriptors, top_k
    )
    for answer in answers:
        for match in answer["matches"]:
            match["path"] = paths[match["db_id"]]
    return predict_response(answers, layout)


def _served(state: ServedState, name: str):
    if name == state.models.name:
        return state.models
    if state.localize is not None and name == state.localize.name:
        return state.localize
    raise NotServed(f"Servable not found for request: Latest({name}). Served: {state.names()}")


async def _get(state: ServedState, target) -> Response:
    served = _served(state, target.name)
    if target.verb is not None:
        return error_response(f":{target.verb} takes POST.", 405)
    if not target.metadata:
        return json_response(status_response(served.status(target.version, target.label)))
    if served is state.models:
        servable = served.resolve(target.version, target.label)
        return json_response(
            metadata_response(target.name, servable.version, servable.descriptor_dim)
        )
    _, _, servable = served.resolve(target.version, target.label)
    return json_response(metadata_response(target.name, served.generation, servable.descriptor_dim))


async def _post(state: ServedState, request: Request, target) -> Response:
    served = _served(state, target.name)
    if target.verb is None or target.metadata:
        return error_response("POST takes /v1/models/NAME[/versions/N|/labels/L]:predict.", 405)
    if target.verb in ("classify", "regress"):
        return error_response(
            f"{target.name} has predict signatures only (serving_default, serve_jpeg); "
            f":{target.verb} needs a signature with method tensorflow/serving/{target.verb}. "
            "Use :predict.",
            400,
        )
    if target.verb != "predict":
        return error_response(f"Unsupported verb :{target.verb}; use :predict.", 400)
    async with state.admission.slot():
        body = await read_body(request, state.max_request_bytes)
        if served is state.models:
            return json_response(await _predict(state, target, body))
        return json_response(await _localize(state, target, body))


def build_app(state: ServedState) -> Starlette:
    """The Starlette app answering TF Serving's REST API for `state`."""

    async def models_route(request: Request) -> Response:
        try:
            target = parse_model_path(request.path_params["path"])
            if request.method == "GET":
                return await _get(state, target)
            return await _post(state, request, target)
        except Overloaded as error:
            return error_response(str(error), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
        except (RequestError, BodyTooLarge) as error:
            return error_response(str(error), 413 if isinstance(error, BodyTooLarge) else 400)
        except (NotServed, LookupError) as error:
            return error_response(str(error.args[0] if error.args else error), 404)
        except Exception as error:  # never takes the server down; the client learns what failed
            logger.exception("Request %s %s failed", request.method, request.url.path)
            return error_response(f"Internal error: {type(error).__name__}: {error}", 500)

    async def status_route(request: Request) -> Response:
        return json_response(state.report())

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        is_ready = state.ready()
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    async def not_found(request: Request, exc) -> Response:
        return error_response(f"Unknown URL {request.url.path}; see /v1/models/NAME.", 404)

    async def wrong_method(request: Request, exc) -> Response:
        return error_response(f"{request.method} is not allowed on {request.url.path}.", 405)

    routes = [
        Route("/v1/models/{path:path}", models_route, methods=["GET", "POST"]),
        Route("/v1/sare-tf/status", status_route, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/", live, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: wrong_method})
