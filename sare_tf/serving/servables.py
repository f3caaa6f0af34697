"""What the server serves and how it changes while it runs: TF Serving's manager, in small.

- `Servable`: one loaded model version with its own micro-batcher, its fingerprint and the
  requests using it.
- `ModelVersions`: the versions of one model base path under a `VersionPolicy` and labels.
  `refresh()` lists the base path, loads and warms up what the policy adds (in a worker thread,
  while the old versions keep answering), then switches in one assignment; a version the policy
  drops is UNLOADING until its last request ends, then END. A version that fails to load is
  reported (END with its error) and changes nothing else.
- `LocalizeIndex`: the place index behind NAME-localize, followed the same way: a new
  generation (`sare-tf index add`) is loaded beside the old one and switched in when a served
  model has its fingerprint; otherwise it is refused and the old pair keeps answering.

Everything here runs on the server's event loop except loading, which runs in its executor, so
the bookkeeping needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import numpy as np
import tensorflow as tf

from sare_tf.artifacts import check_runtime, load_descriptor_model, locate_model, model_fingerprint
from sare_tf.artifacts.versions import list_versions
from sare_tf.encoding import descriptors_of, predict_fn
from sare_tf.index.store import PlaceIndex, read_manifest
from sare_tf.serving.batching import MicroBatcher
from sare_tf.serving.protocol import (
    AVAILABLE,
    END,
    LOADING,
    UNLOADING,
    RequestError,
    version_status,
)
from sare_tf.serving.remote import remote_describe_function
from sare_tf.serving.version_policy import VersionPolicy

logger = logging.getLogger(__name__)


class NotServed(LookupError):
    """No servable answers this model name, version or label (HTTP 404)."""


def is_base_path(path) -> bool:
    """True for a folder of numbered versions (TF Serving's model base path), False for one
    model (a `.keras` file, a version folder, an export's file): the formats resolve a base path
    to one of its versions."""
    path = os.path.normpath(os.path.abspath(os.fspath(path)))
    return os.path.isdir(path) and os.path.normpath(locate_model(path)[0]) != path


def describe_function(loaded):
    """`images [B, H, W, 3] -> descriptors [B, D]` float32 numpy, for the batcher's thread."""

    predict = predict_fn(loaded.model)

    def run(images):
        return descriptors_of(predict(tf.constant(images, tf.float32)))

    return run


class Servable:
    """One loaded model version: its batcher, fingerprint, descriptor size and users.

    Args:
        version: the version number (1 for a model that is not in a base path).
        loaded: the `DescriptorModel`.
        describe: `images -> descriptors` (default: `loaded` run in this process).
        batching: `MicroBatcher` settings (`max_batch`, `max_wait_ms`).
    """

    def __init__(self, version: int, loaded, describe=None, **batching):
        self.version = int(version)
        self.loaded = loaded
        self.fingerprint = model_fingerprint(loaded)
        self.batcher = MicroBatcher(describe or describe_function(loaded), **batching)
        self.descriptor_dim: int | None = None
        self.in_flight = 0
        self.holders: set[str] = set()
        self.on_idle = None

    def warm_up(self) -> None:
        """One model call at the served image size, so the first request pays no tracing."""
        height, width = self.loaded.image_size
        self.descriptor_dim = int(
            self.batcher.run_batch(np.zeros((1, height, width, 3), np.float32)).shape[1]
        )

    @contextlib.contextmanager
    def use(self):
        """Counts a request for the duration of the `with` block."""
        self.in_flight += 1
        try:
            yield self
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                if self.on_idle is not None:
                    self.on_idle(self)
                if not self.holders:
                    self.batcher.close()

    def release(self, holder: str) -> None:
        """`holder` no longer serves with this version; the batcher stops once nobody does."""
        self.holders.discard(holder)
        if not self.holders and self.in_flight == 0:
            self.batcher.close()


def load_servable(path, version: int, runtime=None, predictor_url=None, **batching) -> Servable:
    """Loads, checks and warms up one version (blocking: run it in a worker thread)."""
    loaded = load_descriptor_model(path)
    check_runtime(runtime, loaded)
    if loaded.image_size is None:
        raise ValueError(
            f"{path} does not record its image size; serve_jpeg must resize photos to one size. "
            "Use a model trained or exported by sare-tf."
        )
    describe = remote_describe_function(predictor_url) if predictor_url else None
    servable = Servable(version, loaded, describe, **batching)
    servable.warm_up()
    return servable


class _History:
    """Version states as TF Serving reports them, plus every transition with its time."""

    def __init__(self, subject: str):
        self.subject = subject
        self.states: dict[int, tuple[str, str]] = {}
        self.transitions: list[dict] = []

    def set(self, version: int, state: str, error: str = "") -> None:
        if self.states.get(version) == (state, error):
            return
        self.states[version] = (state, error)
        self.transitions.append(
            {"time": round(time.time(), 3), "version": version, "state": state, "error": error}
        )
        log = logger.warning if error else logger.info
        log("%s version %s: %s%s", self.subject, version, state, f" ({error})" if error else "")

    def status(self, version: int | None = None) -> list[dict]:
        versions = [version] if version is not None else sorted(self.states)
        return [version_status(v, *self.states[v]) for v in versions if v in self.states]


def _quiet_error(error: Exception, base_path: str, name: str) -> str:
    """An error message for clients: the base path is replaced by the model's name."""
    return f"{type(error).__name__}: {error}".replace(os.path.abspath(base_path), name)


class ModelVersions:
    """The served versions of one model (see the module docstring).

    Args:
        name: the model name in URLs.
        path: a base path of numbered versions (followed), or one model (version 1, fixed).
        policy: which versions of a base path are served.
        labels: `{label: version}`.
        load: `(path, version) -> Servable` (blocking).
    """

    def __init__(self, name: str, path, policy: VersionPolicy, labels: dict, load):
        self.name = name
        self.path = os.path.abspath(os.fspath(path))
        self.followed = is_base_path(self.path)
        self.policy = policy
        self.labels = dict(labels)
        self._load = load
        self.serving: dict[int, Servable] = {}
        self.history = _History(name)
        self._failed: set[int] = set()

    def available_on_disk(self) -> list[int]:
        if not self.followed:  # one model: its folder's number when it is a version folder
            base = os.path.basename(self.path)
            return [int(base)] if base.isdigit() and int(base) > 0 else [1]
        return list_versions(self.path)

    def _version_path(self, version: int) -> str:
        return os.path.join(self.path, str(version)) if self.followed else self.path

    async def refresh(self) -> bool:
        """Brings the served versions in line with the base path; True when they changed."""
        on_disk = self.available_on_disk()
        added: dict[int, Servable] = {}
        while True:  # a version that fails to load never displaces one that serves
            candidates = [v for v in on_disk if v not in self._failed]
            wanted = self.policy.select(candidates) if self.followed else candidates
            missing = [v for v in wanted if v not in self.serving and v not in added]
            if not missing:
                break
            for version in missing:
                servable = await self._try_load(version)
                if servable is not None:
                    added[version] = servable
        keep = {v: s for v, s in self.serving.items() if v in wanted}
        if not added and len(keep) == len(self.serving):
            return False
        if not keep and not added:
            # Never leave the model without a version: an emptied base path keeps the last ones.
            return False
        dropped = [s for v, s in self.serving.items() if v not in keep]
        self.serving = {**keep, **added}  # the switch: one assignment
        for version in added:
            self.history.set(version, AVAILABLE)
        for servable in dropped:
            self._retire(servable)
        return True

    async def _try_load(self, version: int) -> Servable | None:
        self.history.set(version, LOADING)
        try:
            servable = await asyncio.get_running_loop().run_in_executor(
                None, self._load, self._version_path(version), version
            )
        except Exception as error:  # reported in the status; the served versions go on
            self._failed.add(version)
            self.history.set(version, END, _quiet_error(error, self.path, self.name))
            return None
        servable.holders.add("policy")
        return servable

    def _retire(self, servable: Servable) -> None:
        def finish(servable):
            if servable.version not in self.serving:
                self.history.set(servable.version, END)
                servable.on_idle = None
                servable.release("policy")

        if servable.in_flight:
            self.history.set(servable.version, UNLOADING)
            servable.on_idle = finish
        else:
            finish(servable)

    def _labelled(self, version: int | None, label: str | None) -> int | None:
        if label is None:
            return version
        if label not in self.labels:
            raise NotServed(f"Unrecognized servable version label: {label}")
        return self.labels[label]

    def resolve(self, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names (the latest by default).

        Raises:
            NotServed: no such version or label, or the version is not loaded.
        """
        version = self._labelled(version, label)
        if version is None:
            if not self.serving:
                raise NotServed(f"Servable not found for request: Latest({self.name})")
            return self.serving[max(self.serving)]
        if version not in self.serving:
            raise NotServed(f"Servable not found for request: Specific({self.name}, {version})")
        return self.serving[version]

    def status(self, version: int | None = None, label: str | None = None) -> list[dict]:
        version = self._labelled(version, label)
        entries = self.history.status(version)
        if not entries:
            which = f"Specific({self.name}, {version})" if version else f"Latest({self.name})"
            raise NotServed(f"Servable not found for request: {which}")
        return entries

    def report(self) -> dict:
        return {
            "base_path_followed": self.followed,
            "version_policy": self.policy.describe(),
            "labels": self.labels,
            "serving": sorted(self.serving),
            "transitions": self.history.transitions,
            "batchers": {str(v): s.batcher.report() for v, s in sorted(self.serving.items())},
        }


def read_generation(folder: str) -> tuple[int, str] | None:
    """`(generation, model fingerprint)` of the index manifest in `folder` (None if unreadable)."""
    try:
        manifest = read_manifest(folder)
        return int(manifest.get("generation", 0)), str(manifest["model"]["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def public_paths(paths) -> list[str]:
    """Database image paths as clients see them: relative to the images' common folder, so the
    server's file system layout is not disclosed."""
    absolute = [p for p in paths if os.path.isabs(p)]
    if not absolute:
        return list(paths)
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return [os.path.relpath(p, root) if os.path.isabs(p) else p for p in paths]


class LocalizeIndex:
    """The place index of NAME-localize and the servable whose descriptors it holds; versions in
    the status are the index's generations."""

    def __init__(self, name: str, folder, models: ModelVersions):
        self.name = name
        self.folder = os.path.abspath(os.fspath(folder))
        self.models = models
        self.index: PlaceIndex | None = None
        self.paths: list[str] = []
        self.servable: Servable | None = None
        self.generation: int | None = None
        self.history = _History(name)
        self._refused: tuple[int, str] | None = None

    def _matching_servable(self, fingerprint: str) -> Servable | None:
        candidates = sorted(self.models.serving.values(), key=lambda s: -s.version)
        if self.servable is not None:
            candidates.append(self.servable)
        return next((s for s in candidates if s.fingerprint == fingerprint), None)

    async def refresh(self) -> bool:
        """Follows the index folder's manifest; True when a new generation took over."""
        seen = read_generation(self.folder)
        if seen is None or seen[0] == self.generation or seen == self._refused:
            return False
        generation, fingerprint = seen
        servable = self._matching_servable(fingerprint)
        if servable is None:
            self._refused = seen
            self.history.set(
                generation, END,
                f"index generation {generation} was built with model fingerprint "
                f"{fingerprint[:19]}..., which no served version of {self.models.name!r} has; "
                + (f"generation {self.generation} keeps serving" if self.generation else "not served"),
            )  # fmt: skip
            return False
        self.history.set(generation, LOADING)
        try:
            index = await asyncio.get_running_loop().run_in_executor(
                None, PlaceIndex.load, self.folder
            )
        except Exception as error:
            if read_generation(self.folder) != seen:
                return False  # replaced while it was read: the next refresh takes the newer one
            self._refused = seen
            self.history.set(generation, END, _quiet_error(error, self.folder, self.name))
            return False
        previous, previous_servable = self.generation, self.servable
        servable.holders.add("localize")
        self.index, self.paths = index, public_paths(index.paths)
        self.servable, self.generation = servable, int(index.manifest.get("generation", generation))
        self.history.set(self.generation, AVAILABLE)
        if previous is not None and previous != self.generation:
            self.history.set(previous, END)
        if previous_servable is not None and previous_servable is not servable:
            previous_servable.release("localize")
        return True

    def resolve(self, version: int | None = None, label: str | None = None) -> tuple:
        if label is not None:
            raise NotServed(f"Unrecognized servable version label: {label}")
        if self.index is None or (version is not None and version != self.generation):
            which = f"Specific({self.name}, {version})" if version else f"Latest({self.name})"
            raise NotServed(f"Servable not found for request: {which}")
        return self.index, self.paths, self.servable

    def status(self, version: int | None = None, label: str | None = None) -> list[dict]:
        if label is not None:
            raise NotServed(f"Unrecognized servable version label: {label}")
        entries = self.history.status(version)
        if not entries:
            raise NotServed(f"Servable not found for request: Latest({self.name})")
        return entries

    def report(self) -> dict:
        return {
            "generation": self.generation,
            "count": None if self.index is None else self.index.count,
            "model_version": None if self.servable is None else self.servable.version,
            "transitions": self.history.transitions,
        }


def check_top_k(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
        raise RequestError(f"'top_k' must be an integer in [1, 100]. Received: {value!r}")
    return value
