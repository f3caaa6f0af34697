"""`import sare_tf` is enough to load saved sare_tf models with plain Keras (issue 19.5)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOAD = """
import sys
{imports}
model = keras.models.load_model(sys.argv[1])
print("LOADED", model.get_layer("netvlad").__class__.__name__, type(model).__name__)
"""


@pytest.mark.parametrize(
    "imports",
    [
        pytest.param("import sare_tf\nimport keras", id="sare_tf-first"),
        pytest.param("import keras\nimport sare_tf", id="keras-first", marks=pytest.mark.slow),
        pytest.param(
            "import sare_tf, tensorflow as tf\nkeras = tf.keras",
            id="through-tf.keras",
            marks=pytest.mark.slow,
        ),
        # Keras first imported by a layer module while sare_tf.layers is half-initialised.
        pytest.param("import sare_tf.layers\nimport keras", id="a-subpackage-first"),
    ],
)
def test_keras_load_model_after_import_sare_tf(imports, tmp_path):
    from sare_tf.models import build_embedding_model

    path = tmp_path / "best.keras"
    build_embedding_model("tiny", num_clusters=4).save(path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "-c", LOAD.format(imports=imports), str(path)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "LOADED NetVLAD PlaceEmbedding" in completed.stdout


def test_import_sare_tf_still_imports_no_tensorflow():
    code = "import sys, sare_tf; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.stdout.split() == ["False", "False"], completed.stderr


MEMORY_INFO = """
import sare_tf
import tensorflow as tf
tf.ones([500, 500]) * 2.0
try:
    print("POOLED", tf.config.experimental.get_memory_info("CPU:0")["peak"] > 0)
except ValueError:  # TensorFlow's default CPU allocator keeps no statistics
    print("POOLED", False)
"""


@pytest.mark.parametrize(
    "user_setting, pooled",
    [(None, True), pytest.param("false", False, marks=pytest.mark.slow)],
)
def test_import_sare_tf_selects_tensorflows_pooling_cpu_allocator(user_setting, pooled, tmp_path):
    """sare_tf makes TensorFlow keep freed CPU memory in its BFC pool (no page faults per
    training step) unless the user chose otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    if user_setting is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = user_setting
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_INFO], capture_output=True, text=True,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"POOLED {pooled}" in completed.stdout
