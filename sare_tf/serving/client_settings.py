"""`QueryServerSettings`: what `sare-tf query-server` sends and prints, one field per argument.

Pure Python, so that the command builds its flags from it at start-up (`sare_tf.config_options`).
"""

from __future__ import annotations

import dataclasses

from sare_tf.config_options import batch_size_option, image_size_option, option
from sare_tf.serving_client import SERVE_JPEG, SERVING_DEFAULT

SIGNATURES = (SERVE_JPEG, SERVING_DEFAULT)


@dataclasses.dataclass(frozen=True)
class QueryServerSettings:
    """Which endpoint is asked about which images, and what is done with the answers.

    Attributes:
        url: the TF Serving REST address (or a full `.../v1/models/NAME:predict` URL).
        images: the image files.
        signature: "serve_jpeg" (encoded files) or "serving_default" (decoded pixels).
        model_name, model_version: which served model (None: the only one; the latest).
        image_size: serving_default only: the size the pixels are resized to before sending.
        db_descriptors, db_list: a database to rank the answers against (both or neither).
        top_k: nearest database images printed per image.
        out: where the descriptors are saved (.npy).
        batch_size: images per request; timeout: seconds per request.
    """

    url: str | None = option(
        None, "TF Serving REST address, e.g. http://localhost:8501 (or a full "
        ".../v1/models/NAME:predict URL)", group="endpoint", flag="URL",
    )  # fmt: skip
    images: tuple[str, ...] | None = option(
        None, "image files to describe", group="endpoint", flag="IMAGE", nargs="+"
    )
    signature: str = option(
        "serve_jpeg", "serve_jpeg sends the encoded files; serving_default sends decoded float "
        "pixels, one image per request", group="endpoint", choices=SIGNATURES,
    )  # fmt: skip
    model_name: str | None = option(
        None, "TF Serving MODEL_NAME (default: the one model a sare-tf serve serves)",
        group="endpoint",
    )  # fmt: skip
    model_version: int | None = option(
        None, "a specific version (default: latest)", group="endpoint"
    )
    image_size: tuple[int, int] | None = image_size_option(
        "serving_default only: resize with PIL (bilinear) before sending"
    )
    batch_size: int = batch_size_option(16, "images per request")
    timeout: float = option(60.0, "seconds per request", group="endpoint", metavar="S")
    db_descriptors: str | None = option(
        None, "[N, D] database descriptors (.npy)", group="database", metavar="NPY"
    )
    db_list: str | None = option(
        None, "database image names, one per line, in the rows' order of --db-descriptors",
        group="database", metavar="TXT",
    )  # fmt: skip
    top_k: int = option(5, "nearest database images to print", group="database")
    out: str | None = option(
        None, "save the descriptors [Q, D] to this .npy", group="output", metavar="NPY"
    )

    def __post_init__(self):
        if (self.db_descriptors is None) != (self.db_list is None):
            raise ValueError(
                "--db-descriptors and --db-list go together. Received: "
                f"--db-descriptors={self.db_descriptors}, --db-list={self.db_list}"
            )
        if self.signature == "serve_jpeg" and self.image_size is not None:
            raise ValueError("--image-size applies to --signature serving_default only.")
        if self.top_k < 1:
            raise ValueError(f"--top-k must be at least 1. Received: --top-k {self.top_k}")
