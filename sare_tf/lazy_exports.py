"""Package names that are imported from their submodules on first use (PEP 562).

A package whose public names live in modules that import TensorFlow (or faiss) lists them here
instead of importing them, so that importing the package, or a light module inside it (the
config objects every command builds its flags from), stays cheap: `sare-tf --help` and a
mistyped flag answer before TensorFlow loads. This is the one mechanism by which sare_tf defers
its own imports; optional extras are reached through `sare_tf.extras`.

Example:

    # in sare_tf/index/__init__.py
    __getattr__, __dir__, __all__ = lazy_exports(
        __name__, {"faiss_search": ("build_index", "search"), "store": ("PlaceIndex",)}
    )
"""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]):
    """The `__getattr__`, `__dir__` and `__all__` of a package whose names load on first use.

    Args:
        package: the package's `__name__`.
        exports: submodule name (relative to the package, or a full `sare_tf.` module name
            for a name re-exported from another package) -> the names it provides.

    Returns:
        `(__getattr__, __dir__, __all__)` to assign at the package's top level; a name, once
        loaded, is kept on the package, so later look-ups are plain attribute reads.
    """
    clashes = sorted(set(exports) & {name for names in exports.values() for name in names})
    if clashes:
        # Importing submodule `x` sets the package's attribute `x` to the module, hiding the
        # name for good: such a name is imported eagerly by the package instead.
        raise ValueError(f"{package}: lazy names equal to a submodule's name: {clashes}")
    owners = {
        name: module if module.startswith("sare_tf.") else f"{package}.{module}"
        for module, names in exports.items()
        for name in names
    }

    def __getattr__(name: str):
        if name not in owners:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(owners[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(owners))

    return __getattr__, __dir__, sorted(owners)
