"""sare_tf: NetVLAD descriptors trained with the SARE loss family for image-based localization.

Importing the package is cheap: it does not import TensorFlow or Keras. Submodules
(``sare_tf.layers``, ``sare_tf.losses``, ``sare_tf.model``, ...) are imported on first use.
Three side effects: TensorFlow's C++ start-up chatter is quietened (only when the user has not
set ``TF_CPP_MIN_LOG_LEVEL``); TensorFlow's CPU memory comes from its pooling (BFC) allocator
(only when the user has not set ``TF_CPU_ALLOCATOR_USE_BFC``, and only if sare_tf is imported
before TensorFlow's first tensor); and sare_tf's layers, losses and models are registered with Keras as
soon as Keras is imported (now, if it already is), so that after ``import sare_tf``,
``keras.models.load_model("best.keras")`` rebuilds sare_tf models.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys

from sare_tf._version import __version__

# TensorFlow prints CUDA probing lines at import on CPU-only hosts; they are noise for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's default CPU allocator hands every large tensor back to the OS when it is freed, so
# each training step page-faults its activations in again. The pooling allocator keeps them (the
# memory stays reserved for the process, as on a GPU). Measured: sare-tf demo's system time fell
# from 3.7 to 0.25 CPU-minutes on a 2-core AVX2 EPYC, inference +19 % (sare-tf bench training).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

_SUBMODULES = (
    "artifacts",
    "bench",
    "cluster_init",
    "data",
    "encoding",
    "evaluation",
    "export",
    "hardware",
    "layers",
    "losses",
    "mining",
    "model",
    "models",
    "precision",
    "saliency",
    "synthetic",
    "training",
)

__all__ = ["__version__", "set_precision", *_SUBMODULES]


def set_precision(policy: str = "auto", force: bool = False) -> str:
    """Sets the global Keras dtype policy; see `sare_tf.precision.set_precision`."""
    from sare_tf.precision import set_precision as _set_precision

    return _set_precision(policy, force=force)


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """Imports sare_tf's layers, losses and models once `keras` has finished importing.

    Keras finds custom classes of a `.keras` file only once they are registered, which happens
    when their modules are imported; this makes `import sare_tf` enough, without importing
    TensorFlow before the user does. When Keras is first imported by a sare_tf module (say
    `sare_tf.layers.gem`, while `sare_tf.layers` is half-initialised), registering then would
    import that half-initialised package; registration waits until no sare_tf module is still
    initialising, checked after each sare_tf module this finder sees loaded.
    """

    _searching = False
    _keras_loaded = False

    def find_spec(self, name, path=None, target=None):
        if self._searching or not (name == "keras" or name.startswith("sare_tf.")):
            return None
        # Find the real spec with the other finders. Not one-shot here: TensorFlow probes
        # `importlib.util.find_spec("keras")` before it imports Keras.
        self._searching = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module
        finder = self

        def exec_module(module):
            execute(module)
            if name == "keras":
                finder._keras_loaded = True
            # `module` itself still counts as initialising until this returns.
            if (
                finder._keras_loaded
                and not _sare_tf_initialising(besides=name)
                and finder in sys.meta_path
            ):
                sys.meta_path.remove(finder)
                _register()

        spec.loader.exec_module = exec_module
        return spec


def _sare_tf_initialising(besides: str) -> bool:
    """Whether a sare_tf submodule other than `besides` is part-way through its import."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith("sare_tf.") and name != besides
    )


def _register() -> None:
    importlib.import_module("sare_tf.layers")
    importlib.import_module("sare_tf.losses")
    importlib.import_module("sare_tf.model")


if "keras" in sys.modules:
    _register()
elif not any(isinstance(finder, _RegisterWithKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithKeras())


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"sare_tf.{name}")
    raise AttributeError(f"module 'sare_tf' has no attribute {name!r}")
