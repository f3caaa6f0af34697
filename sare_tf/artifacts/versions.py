"""TF Serving's folder layout, shared by every exported format: numbered versions of a named model.

```
<root>/<name>/          the model base path (TF Serving's --model_base_path)
  1/  2/ ...            one version each: a SavedModel, or model.onnx / model.tflite beside
                        export_info.json
  .export-*/            a version being written (hidden; renamed to its number to commit it)
```

A version folder is recognised by the file that marks its format (`saved_model.pb`,
`model.onnx`, `model.tflite`); the highest number is the one served by default.
"""

from __future__ import annotations

import os
import re

# Also a valid TF Serving model name and URL path segment.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(name: str) -> str:
    """`name` when it can be a folder and a TF Serving URL segment, else a ValueError."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ValueError(
            "The model name (--name) must be letters, digits, '_', '-' or '.', starting with a "
            f"letter or digit (it is a folder and a TF Serving URL segment). Received: {name!r}"
        )
    return name


def list_versions(model_dir, marker: str | None = None) -> list[int]:
    """Sorted version numbers (positive integer-named subfolders) under a model base path.

    Args:
        model_dir: the base path.
        marker: count only versions holding this file (e.g. "saved_model.pb").
    """
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(entry.name)
        for entry in os.scandir(model_dir)
        if entry.is_dir()
        and entry.name.isdigit()
        and int(entry.name) > 0
        and (marker is None or os.path.isfile(os.path.join(entry.path, marker)))
    )


def latest_version_dir(model_dir, marker: str) -> str | None:
    """The highest version folder holding `marker`, or None."""
    versions = list_versions(model_dir, marker)
    return os.path.join(os.fspath(model_dir), str(versions[-1])) if versions else None


def next_version(root, name: str) -> int:
    """The next free version number of `<root>/<name>` (1 for a new model)."""
    versions = list_versions(os.path.join(os.fspath(root), check_name(name)))
    return versions[-1] + 1 if versions else 1


def locate_version(path, marker: str) -> str | None:
    """The version folder holding `marker` at `path`: that file itself, its folder, or a base
    path of numbered versions (the highest); None when `path` is none of these."""
    path = os.fspath(path)
    if os.path.isfile(path):
        # The model file itself, under any name with the marker's extension.
        same_kind = path.endswith(os.path.splitext(marker)[1] or marker)
        return os.path.dirname(os.path.abspath(path)) if same_kind else None
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, marker)):
        return path
    return latest_version_dir(path, marker)


def version_label(path: str) -> str:
    """A short label for a model path: `best` for best.keras, `city/3` for a version folder."""
    path = os.path.normpath(path)
    base = os.path.basename(path)
    if base.endswith(".keras"):
        return base[: -len(".keras")]
    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{base}" if base.isdigit() and parent else base
