"""One-line pretrained models: download a known release (`sare_tf.registry.PRESETS`) into the
Keras cache, check its sha256, import it.

    sare-tf import --preset boq-dinov2-12288 --out boq.keras
    >>> from sare_tf.convert.presets import load_preset
    >>> model = load_preset("cosplace-resnet50-2048")

Files are fetched with Keras's downloader (`keras.utils.get_file`, with its progress bar) into a
staging folder inside the cache and moved into place only once complete and checked, so an
interrupted or refused download leaves nothing behind. The sha256 is checked against the
authors' where they publish one; otherwise the first download's is recorded
(`<cache>/sha256.json`) and every later use of the cached file is checked against it. A local
file always works instead (`sare-tf import FILE`), and `mirror` fetches the same file name from
another base URL (a mirror, or a server on this machine).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import keras

from sare_tf.atomic import write_json_atomic
from sare_tf.convert import import_checkpoint
from sare_tf.hashing import file_sha256
from sare_tf.registry import Preset, preset_spec

logger = logging.getLogger(__name__)
HASHES_FILE = "sha256.json"


def default_cache_dir() -> str:
    """`$KERAS_HOME/models/sare_tf` (Keras's cache root, `~/.keras` by default)."""
    root = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(root, "models", "sare_tf")


def _recorded_hashes(cache_dir: str) -> dict:
    path = os.path.join(cache_dir, HASHES_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def _check_hash(preset: Preset, path: str, cache_dir: str) -> str:
    """The file's sha256, checked against the published or recorded one (ValueError if not)."""
    digest = file_sha256(path)
    recorded = _recorded_hashes(cache_dir).get(preset.file_name)
    expected, where = (
        (preset.sha256, "the authors' published")
        if preset.sha256
        else (recorded, "the first download's")
    )
    if expected is not None and digest != expected:
        raise ValueError(
            f"{preset.name}: {path} has sha256 {digest}, not {where} {expected}: the file is "
            "corrupt or was replaced at its source. Nothing was imported."
        )
    return digest


def download_preset(name: str | Preset, cache_dir=None, mirror: str | None = None) -> str:
    """The path of preset `name`'s file in the cache, downloading and checking it if needed.

    Args:
        name: a preset name (or a `Preset`).
        cache_dir: where files are kept (default `default_cache_dir()`).
        mirror: a base URL to fetch the same file name from instead of the authors' URL.

    Raises:
        ValueError: the sha256 differs from the published or recorded one (the download is
            removed; a cached file that changed is left for the user to inspect and named).
        Exception: the download failed (Keras's message, with the URL).
    """
    preset = name if isinstance(name, Preset) else preset_spec(name)
    cache_dir = os.fspath(cache_dir or default_cache_dir())
    os.makedirs(cache_dir, exist_ok=True)
    final = os.path.join(cache_dir, preset.file_name)
    if os.path.isfile(final):
        _check_hash(preset, final, cache_dir)
        return final
    url = f"{mirror.rstrip('/')}/{preset.file_name}" if mirror else preset.url
    staging = tempfile.mkdtemp(prefix=".download-", dir=cache_dir)
    try:
        logger.info("Downloading %s from %s", preset.name, url)
        fetched = keras.utils.get_file(
            preset.file_name, origin=url, cache_dir=staging, cache_subdir="."
        )
        digest = _check_hash(preset, fetched, cache_dir)
        os.replace(fetched, final)
        if preset.sha256 is None:
            write_json_atomic(
                os.path.join(cache_dir, HASHES_FILE),
                {**_recorded_hashes(cache_dir), preset.file_name: digest},
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def import_preset(name: str, out=None, cache_dir=None, mirror: str | None = None) -> dict:
    """Downloads (or reuses) preset `name` and imports it as `out` (default `<cache>/<name>.keras`).

    Returns:
        The import sidecar, with the preset's name, URL, licence and the authors' figures.
    """
    preset = preset_spec(name)
    cache_dir = os.fspath(cache_dir or default_cache_dir())
    path = download_preset(preset, cache_dir, mirror)
    out = os.fspath(out or os.path.join(cache_dir, f"{preset.name}.keras"))
    sidecar = import_checkpoint(path, out, preset.format, preset.image_size, preset.trained_on)
    if sidecar["model"]["descriptor_dim"] != preset.descriptor_dim:
        os.remove(out)
        os.remove(f"{out}.json")
        raise ValueError(
            f"{preset.name}: {path} gives {sidecar['model']['descriptor_dim']}-d descriptors; the "
            f"release is {preset.descriptor_dim}-d. Nothing was kept."
        )
    sidecar["output"] = out
    sidecar["preset"] = {
        "name": preset.name, "url": preset.url, "licence": preset.licence,
        "recall": preset.recall, "recall_source": preset.recall_source,
    }  # fmt: skip
    write_json_atomic(f"{out}.json", sidecar)
    return sidecar


def load_preset(name: str, cache_dir=None, mirror: str | None = None) -> keras.Model:
    """The preset's model, imported once into the cache and loaded from there afterwards."""
    cache_dir = os.fspath(cache_dir or default_cache_dir())
    path = os.path.join(cache_dir, f"{name}.keras")
    if not os.path.isfile(path):
        import_preset(name, path, cache_dir, mirror)
    return keras.saving.load_model(path, compile=False)
