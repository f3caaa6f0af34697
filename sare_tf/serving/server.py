"""Running `sare-tf serve`: bind the port, load and check what is served, then answer until
SIGTERM, following the model base path and the index folder meanwhile.

Order of start-up (so a failure is reported before anything claims to serve): the port is
bound first (a taken port fails at once), then the versions are loaded and warmed up and the
index is checked against them, then `announce` is called and requests are accepted.

SIGTERM (or Ctrl-C): the listening socket closes (new connections are refused), requests in
flight finish within `grace_seconds`, the process exits with code 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

import uvicorn

from sare_tf.serving.admission import Admission
from sare_tf.serving.app import LOCALIZE_SUFFIX, ServedState, build_app
from sare_tf.serving.servables import LocalizeIndex, ModelVersions, load_servable
from sare_tf.serving.settings import ServeSettings

logger = logging.getLogger(__name__)


def bind_port(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) socket, so the port is claimed before anything is loaded.

    Raises:
        OSError: the port is taken or the address is not this machine's (said in words).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            f"Cannot listen on {host}:{port}: {error.strerror or error}. Is another server using "
            "the port? Choose another with --port."
        ) from None
    sock.set_inheritable(True)
    return sock


async def load_served(model_path, name: str, index_folder, settings: ServeSettings) -> ServedState:
    """Loads the served versions and the index and checks that they belong together.

    Raises:
        ValueError: no version could be loaded, or the index matches no served version (the
            message carries each version's error).
    """

    def load(path, version):
        return load_servable(
            path, version, settings.runtime, settings.predictor_url,
            max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
        )  # fmt: skip

    models = ModelVersions(name, model_path, settings.policy, settings.labels, load)
    await models.refresh()
    if not models.serving:
        errors = [
            f"version {t['version']}: {t['error']}"
            for t in models.history.transitions
            if t["error"]
        ]
        raise ValueError(f"No version of {model_path} could be served. " + "; ".join(errors))
    missing = sorted(set(settings.labels.values()) - set(models.serving))
    if missing:
        logger.warning("Labels point to versions that are not served: %s", missing)
    localize = None
    if index_folder is not None:
        localize = LocalizeIndex(name + LOCALIZE_SUFFIX, index_folder, models)
        await localize.refresh()
        if localize.index is None:
            errors = [t["error"] for t in localize.history.transitions if t["error"]]
            raise ValueError(
                f"The place index in {index_folder} cannot be served: "
                + ("; ".join(errors) or "no readable manifest.json there.")
                + " Build the index with the served model, or serve the model it was built with."
            )
    return ServedState(
        models, localize,
        Admission(settings.max_in_flight, settings.max_queued, settings.queue_timeout_ms / 1000),
        settings.max_request_bytes, settings.max_pixels, settings.max_instances,
    )  # fmt: skip


async def follow(state: ServedState, poll_seconds: float) -> None:
    """Looks at the base path and the index folder every `poll_seconds`, forever."""
    while True:
        await asyncio.sleep(poll_seconds)
        try:
            await state.models.refresh()
            if state.localize is not None:
                await state.localize.refresh()
        except Exception:  # a failed look is logged; the served versions go on
            logger.exception("Following %s failed", state.models.path)


async def run_server(sock, state: ServedState, settings: ServeSettings, announce) -> None:
    config = uvicorn.Config(
        build_app(state), log_config=None, access_log=False, timeout_keep_alive=65,
        timeout_graceful_shutdown=settings.grace_seconds, lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)
    follower = None
    if settings.poll_seconds > 0:
        follower = asyncio.get_running_loop().create_task(follow(state, settings.poll_seconds))
    announce(state)
    try:
        await server.serve(sockets=[sock])
    finally:
        if follower is not None:
            follower.cancel()
    logger.info("Stopped: requests in flight finished.")


def _stop(signum, frame):
    # uvicorn handles SIGTERM while serving and hands it back here after its graceful shutdown;
    # before that (while loading) it stops the start-up. Either way the exit is a clean one.
    raise SystemExit(0)


def serve(model_path, name: str, index_folder=None, settings=None, announce=lambda state: None):
    """Serves `model_path` (a model or a base path of versions) as `name` until SIGTERM.

    Args:
        model_path: a `.keras` file, a SavedModel, an ONNX / LiteRT export, or a TF Serving base
            path of numbered versions (followed under `settings.policy`).
        name: the model name in URLs (TF Serving's MODEL_NAME).
        index_folder: a place index to serve as NAME-localize (followed too).
        settings: `ServeSettings`.
        announce: called with the `ServedState` once everything is loaded and checked, right
            before requests are accepted.
    """
    settings = settings or ServeSettings()
    sock = bind_port(settings.host, settings.port)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    async def main():
        state = await load_served(model_path, name, index_folder, settings)
        await run_server(sock, state, settings, announce)

    try:
        asyncio.run(main())
    except SystemExit:
        pass
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
