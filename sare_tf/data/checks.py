"""Bad input: the policy for unusable image files, and the up-front check of a dataset.

Policy (the same in `check_images`, `safe_load_image` and the tuple pipeline):

- "skip" (default): a bad file (missing, empty, truncated, not an image, too many pixels) is
  reported with its path and reason, counted, and left out: the tuple pipeline drops the tuples
  that need it. `BadImageLog.summary()` gives the count for the run summary.
- "error": the first bad file stops the run with an error naming the file.

Images that are images but not 8-bit RGB (grayscale, palette, RGBA, CMYK JPEG, 16-bit PNG) are
not bad: they are converted to RGB (`sare_tf.data.images.read_rgb`).

`check_images` decodes every file once, before training, so a bad file is found in minutes
rather than hours into a run (`sare-tf check-data DATASET`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from sare_tf.data.images import DEFAULT_MAX_PIXELS, BadImageError, read_rgb
from sare_tf.progress import ProgressBar

POLICIES = ("skip", "error")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(
            f"Unknown bad-image policy. Expected one of {POLICIES}. Received: {policy!r}"
        )
    return policy


class BadImageLog:
    """Thread-safe record of bad image files met while loading, with the policy to apply.

    Args:
        policy: "skip" (record and go on) or "error" (raise `BadImageError` at the first one).
        max_recorded: paths kept for the report (the count is always exact).

    Example:
        >>> log = BadImageLog()
        >>> dataset = make_tuple_dataset(geo, state, bad_images=log)
        >>> model.fit(dataset)
        >>> print(log.summary())
    """

    def __init__(self, policy: str = "skip", max_recorded: int = 1000):
        self.policy = check_policy(policy)
        self.max_recorded = int(max_recorded)
        self._lock = threading.Lock()
        self._count = 0
        self._records: dict[str, str] = {}

    def record(self, path: str, reason: str) -> None:
        """Records a bad file; raises `BadImageError` under the "error" policy."""
        path = os.fsdecode(path)
        with self._lock:
            self._count += 1
            if path not in self._records and len(self._records) < self.max_recorded:
                self._records[path] = reason
        if self.policy == "error":
            raise BadImageError(path, reason)

    @property
    def count(self) -> int:
        """Bad loads so far (a file loaded in several tuples counts each time)."""
        return self._count

    @property
    def files(self) -> dict[str, str]:
        """`{path: reason}` of the distinct bad files recorded."""
        with self._lock:
            return dict(self._records)

    def summary(self) -> str:
        files = self.files
        if not self._count:
            return "Bad image files: none."
        lines = [
            f"Bad image files: {len(files)} distinct file(s), {self._count} failed load(s); "
            f"policy '{self.policy}' (skipped tuples that need them)."
        ]
        lines += [f"  {path}: {reason}" for path, reason in list(files.items())[:20]]
        if len(files) > 20:
            lines.append(f"  ... and {len(files) - 20} more")
        return "\n".join(lines)


@dataclasses.dataclass
class ImageCheckReport:
    """What `check_images` found.

    Attributes:
        num_checked: files decoded.
        bad: `{path: reason}` for unusable files.
        converted: `{source mode: count}` of images converted to RGB (e.g. "L", "CMYK", "I;16").
        formats: `{format: count}` of the readable files (e.g. "JPEG", "PNG").
    """

    num_checked: int
    bad: dict[str, str]
    converted: dict[str, int]
    formats: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.bad

    def summary(self) -> str:
        text = f"Checked {self.num_checked} image files: {len(self.bad)} bad"
        if self.formats:
            text += "; formats " + ", ".join(f"{k} {v}" for k, v in sorted(self.formats.items()))
        if self.converted:
            text += "; converted to RGB from " + ", ".join(
                f"{k} {v}" for k, v in sorted(self.converted.items())
            )
        lines = [text + "."]
        lines += [f"  {path}: {reason}" for path, reason in list(self.bad.items())[:50]]
        if len(self.bad) > 50:
            lines.append(f"  ... and {len(self.bad) - 50} more")
        return "\n".join(lines)

    def raise_if_bad(self) -> None:
        """Raises `ValueError` listing the bad files (the "error" policy)."""
        if self.bad:
            raise ValueError(self.summary())


def _check_one(path: str, max_pixels: int) -> tuple[str, str | None, str | None, str | None]:
    try:
        with Image.open(path) as image:
            mode, image_format = image.mode, image.format
    except Exception:
        mode, image_format = None, None
    try:
        read_rgb(path, None, max_pixels)
    except BadImageError as error:
        return path, error.reason, None, None
    return path, None, mode, image_format


def check_images(
    paths: Sequence[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_workers: int | None = None,
    progress: bool = False,
) -> ImageCheckReport:
    """Fully decodes every file (as training will) and reports the bad ones.

    Args:
        paths: image files.
        max_pixels: images with more pixels count as bad.
        num_workers: decoding threads (Pillow releases the GIL); default the CPU count.
        progress: show a progress bar.

    Returns:
        An `ImageCheckReport`; it never raises for a bad file.
    """
    paths = [os.fsdecode(p) for p in paths]
    workers = num_workers or os.cpu_count() or 1
    bad, converted, formats = {}, collections.Counter(), collections.Counter()
    bar = ProgressBar(len(paths), "image", enabled=progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: _check_one(p, max_pixels), paths, chunksize=16)
        for done, (path, reason, mode, image_format) in enumerate(results, start=1):
            if reason is not None:
                bad[path] = reason
            else:
                formats[image_format or "unknown"] += 1
                if mode != "RGB":
                    converted[mode] += 1
            bar.update(done)
    return ImageCheckReport(len(paths), bad, dict(converted), dict(formats))


def check_dataset(dataset, **kwargs) -> ImageCheckReport:
    """`check_images` over a `GeoDataset`'s database and query images."""
    return check_images(dataset.db_image_paths() + dataset.query_image_paths(), **kwargs)
