"""`ServeSettings`: how `sare-tf serve` runs, one field per flag of the command.

Pure Python (the serve extra is not imported), so that the command builds its flags from it at
start-up (`sare_tf.config_options`) and a missing extra is reported only when serving starts.
"""

from __future__ import annotations

import dataclasses

from sare_tf.config_options import option, runtime_option
from sare_tf.serving.version_policy import POLICIES, VersionPolicy, parse_labels

MAX_PIXELS = 40_000_000
MEBIBYTE = 2**20


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """How `sare-tf serve` runs (each field is a flag of the command).

    Attributes:
        host, port: where to listen (127.0.0.1: this machine only).
        version_policy, num_versions, versions: which versions of a base path are served
            (`policy`); version_label: "label=version" names (`labels`).
        poll_seconds: how often the base path and the index folder are looked at (0: never).
        max_batch, max_wait_ms: micro-batching of concurrent requests (`MicroBatcher`).
        max_in_flight, max_queued, queue_timeout_ms: load bounds (`Admission`).
        max_request_mb, max_pixels, max_instances: per-request limits.
        grace_seconds: how long requests in flight may take to finish after SIGTERM.
        runtime: refuse models that are not this runtime's ("tf", "onnx", "litert"; None: any).
        predictor_url: compute descriptors with this TF Serving predict URL instead of in this
            process (KServe's transformer / predictor split).
    """

    runtime: str | None = runtime_option()
    predictor_url: str | None = option(
        None, "compute descriptors on this TF Serving predictor (e.g. http://predictor/v1/"
        "models/city:predict) instead of in this process: KServe's transformer / predictor "
        "split", group="model", metavar="URL",
    )  # fmt: skip
    host: str = option("127.0.0.1", "address to bind", group="listen")
    port: int = option(8501, "HTTP port", group="listen")
    version_policy: str = option(
        "latest", "serve the --num-versions highest, the --versions listed, or all",
        group="versions (a TF Serving base path of numbered versions)", choices=POLICIES,
    )  # fmt: skip
    num_versions: int = option(
        1, "with --version-policy latest",
        group="versions (a TF Serving base path of numbered versions)",
    )  # fmt: skip
    versions: tuple[int, ...] = option(
        (), "with --version-policy specific: the versions to serve",
        group="versions (a TF Serving base path of numbered versions)", nargs="+", metavar="V",
    )  # fmt: skip
    version_label: tuple[str, ...] = option(
        (), "name a version, e.g. stable=1 (URLs /v1/models/NAME/labels/stable:predict); "
        "repeatable", group="versions (a TF Serving base path of numbered versions)",
        metavar="LABEL=V", repeat=True,
    )  # fmt: skip
    poll_seconds: float = option(
        2.0, "look for new versions and index generations this often (0: never)",
        group="versions (a TF Serving base path of numbered versions)",
    )  # fmt: skip
    max_batch: int = option(16, "images per model call at most", group="batching and load bounds")
    max_wait_ms: float = option(
        5.0, "how long a request waits for others to share its model call",
        group="batching and load bounds", flag="--batch-wait-ms",
    )  # fmt: skip
    max_in_flight: int = option(32, "requests at work at once", group="batching and load bounds")
    max_queued: int = option(
        64, "requests waiting for a slot at once; more get HTTP 503 at once",
        group="batching and load bounds",
    )  # fmt: skip
    queue_timeout_ms: float = option(
        1000.0, "a waiting request gets HTTP 503 after this long",
        group="batching and load bounds",
    )  # fmt: skip
    max_request_mb: float = option(
        32.0, "larger request bodies get HTTP 413", group="batching and load bounds"
    )
    max_pixels: int = option(
        MAX_PIXELS, "larger images are refused (HTTP 400)", group="batching and load bounds"
    )
    max_instances: int = option(
        64, "more images per request are refused", group="batching and load bounds"
    )
    grace_seconds: float = option(
        30.0, "after SIGTERM, how long requests in flight may take to finish",
        group="batching and load bounds",
    )  # fmt: skip

    def __post_init__(self):
        self.policy, self.labels  # noqa: B018  (a bad policy or label is refused here, early)

    @property
    def policy(self) -> VersionPolicy:
        """Which versions of a base path are served."""
        return VersionPolicy(self.version_policy, self.num_versions, tuple(self.versions))

    @property
    def labels(self) -> dict[str, int]:
        """label -> version, from the "label=version" flags."""
        return parse_labels(self.version_label)

    @property
    def max_request_bytes(self) -> int:
        """`max_request_mb` in bytes."""
        return int(self.max_request_mb * MEBIBYTE)
