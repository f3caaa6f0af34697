"""Optional packages, imported when first needed, with the install command when missing.

The one way sare_tf reaches a package of an extra (setup.cfg's `[options.extras_require]`): a
module that needs one calls `require(...)` where the package is used, so that importing the
module, and everything that does not use the extra, works without it.

Example:

    ort = require("onnxruntime", extra="runtimes", what="ONNX models")
"""

from __future__ import annotations

import importlib


class MissingExtraError(ValueError):
    """An optional package is not installed; the message says which extra brings it."""


def require(module: str, extra: str, what: str):
    """The module `module` of the extra `extra`, imported now.

    Args:
        module: the module's import name (e.g. "onnxruntime.quantization").
        extra: the extra that installs it (e.g. "runtimes").
        what: what needs it, for the message (e.g. "ONNX models").

    Raises:
        MissingExtraError: the package is missing (or fails to import), with the pip command.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f'{what} need the {module.split(".")[0]} package: pip install -e ".[{extra}]" ({error})'
        ) from None
