"""SavedModel export: served descriptors equal the Keras model's, in a process without sare_tf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import sare_tf
from sare_tf.cli import main as cli_main
from sare_tf.data import GeoDataset, write_dbstruct
from sare_tf.data.images import resize_image, safe_load_image
from sare_tf.export import export_saved_model, export_versioned, list_versions, next_version
from sare_tf.models import build_embedding_model, feature_model, netvlad_layer

IMAGE_SIZE = (64, 64)
BF16_IMAGE_SIZE = (48, 64)

# Runs in a fresh interpreter. keras, tf_keras and sare_tf are made unimportable before
# TensorFlow is imported (TF 2.21 itself imports parts of keras when keras is installed, so
# "not in sys.modules" alone would not hold): loading and serving must need neither.
SERVING_SCRIPT = r"""
import json, sys
for blocked in ("keras", "tf_keras", "sare_tf"):
    sys.modules[blocked] = None
import numpy as np
import tensorflow as tf

config = json.load(open(sys.argv[1]))
models = {key: tf.saved_model.load(path) for key, path in config["models"].items()}
results = {"signatures": {key: sorted(m.signatures) for key, m in models.items()}, "dtypes": {}}
arrays, errors = {}, {}
for case, (key, signature, paths) in config["calls"].items():
    function = models[key].signatures[signature]
    if signature == "serve_jpeg":
        inputs = {"image_bytes": tf.constant([open(path, "rb").read() for path in paths])}
    else:
        inputs = {"image": tf.constant(np.load(paths[0]))}
    try:
        descriptor = function(**inputs)["descriptor"]
        arrays[case] = descriptor.numpy()
        results["dtypes"][case] = descriptor.dtype.name
    except Exception as error:
        errors[case] = [type(error).__name__, str(error)]
results["errors"] = errors
np.savez(config["out"], **arrays)
results["loaded_forbidden_modules"] = sorted(
    name for name, module in sys.modules.items()
    if module is not None and name.split(".")[0] in ("keras", "tf_keras", "sare_tf")
)
json.dump(results, open(config["results"], "w"))
"""


def _block_images(rng, count, height, width):
    """Images of 4x4 flat colour blocks: structured enough for distinct descriptors."""
    blocks = rng.integers(0, 256, (count, 4, 4, 3))
    return np.stack([np.kron(b, np.ones((height // 4, width // 4, 1))) for b in blocks]).astype(
        np.float32
    )


def _tiny_model(input_shape, seed, sample_size=(64, 64)):
    """A tiny model whose NetVLAD clusters come from its own features, as after cluster init
    (random centroids give nearly the same descriptor to every image)."""
    model = build_embedding_model("tiny", num_clusters=4, input_shape=input_shape)
    rng = np.random.default_rng(seed)
    features = feature_model(model)(_block_images(rng, 4, *sample_size))
    netvlad_layer(model).initialize_from_descriptors(
        keras.ops.convert_to_numpy(features).reshape(-1, 128), niter=20
    )
    return model


def _write_image(path, array, **save_kwargs):
    Image.fromarray(array).save(path, **save_kwargs)
    return str(path)


def _run(command, timeout=180):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, cwd="/"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def _pipeline_pixels(paths, image_size):
    """float32 [N, H, W, 3]: what training and evaluation read (sare_tf.data.images)."""
    images = []
    for path in paths:
        image, ok = safe_load_image(tf.constant(path), image_size)
        assert bool(ok), path
        images.append(image.numpy())
    return np.stack(images)


def _saved_model_cli():
    return os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A float32 64x64 model and a mixed_bfloat16 any-size model, exported, plus test images."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    model = _tiny_model((*IMAGE_SIZE, 3), seed=1)
    previous = keras.config.dtype_policy()
    try:
        sare_tf.set_precision("mixed_bfloat16")
        bf16_model = _tiny_model((None, None, 3), seed=2, sample_size=BF16_IMAGE_SIZE)
    finally:
        keras.config.set_dtype_policy(previous)
    export_saved_model(model, root / "float32")
    export_saved_model(bf16_model, root / "bf16", image_size=BF16_IMAGE_SIZE)

    def photo(height, width, channels=3):
        blocks = np.kron(
            rng.integers(0, 256, (8, 8, channels)), np.ones((height // 8 + 1, width // 8 + 1, 1))
        )
        noisy = blocks[:height, :width] + rng.normal(0, 12, (height, width, channels))
        return np.clip(noisy, 0, 255).astype(np.uint8)

    rgba = np.concatenate(
        [photo(50, 70), rng.integers(0, 256, (50, 70, 1), dtype=np.uint8)], axis=2
    )
    files = [
        _write_image(root / "a.jpg", photo(80, 100), quality=90),  # decoded at full scale
        _write_image(root / "b.png", photo(50, 70)),
        _write_image(root / "gray.jpg", photo(64, 64, 1)[..., 0]),
        _write_image(root / "big.jpg", photo(150, 200)),  # 2x the 64x64 input: decoded at 1/2
        _write_image(root / "huge.jpg", photo(600, 560)),  # decoded at 1/8
        _write_image(root / "alpha.png", rgba),  # transparency over white
    ]
    with open(files[0], "rb") as file:
        jpeg = file.read()
    bad = {"garbage": root / "garbage.jpg", "truncated": root / "truncated.jpg"}
    bad["garbage"].write_bytes(b"this is not an image")
    bad["truncated"].write_bytes(jpeg[: len(jpeg) // 2])
    float_batch = _block_images(rng, 2, 64, 64)
    other_size = _block_images(rng, 1, 40, 56)
    np.save(root / "float_batch.npy", float_batch)
    np.save(root / "other_size.npy", other_size)
    return types.SimpleNamespace(
        root=root,
        model=model,
        bf16_model=bf16_model,
        files=files,
        bad=bad,
        float_batch=float_batch,
        other_size=other_size,
    )


@pytest.fixture(scope="module")
def served(exported):
    """Runs SERVING_SCRIPT once in a fresh interpreter; returns (arrays, results)."""
    root = exported.root
    floats = {label: str(root / f"{label}.npy") for label in ("float_batch", "other_size")}
    files, bad = exported.files, exported.bad
    config = {
        "models": {"float32": str(root / "float32"), "bf16": str(root / "bf16")},
        "calls": {
            "float32_float_batch": ("float32", "serving_default", [floats["float_batch"]]),
            "float32_other_size": ("float32", "serving_default", [floats["other_size"]]),
            "float32_files": ("float32", "serve_jpeg", files),
            "bf16_float_batch": ("bf16", "serving_default", [floats["float_batch"]]),
            "bf16_other_size": ("bf16", "serving_default", [floats["other_size"]]),
            "bf16_files": ("bf16", "serve_jpeg", files),
            "garbage_second": ("float32", "serve_jpeg", [files[0], str(bad["garbage"])]),
            "truncated_first": ("float32", "serve_jpeg", [str(bad["truncated"]), files[1]]),
        },
        "out": str(root / "served.npz"),
        "results": str(root / "served.json"),
    }
    config_path = root / "serve_config.json"
    config_path.write_text(json.dumps(config))
    _run([sys.executable, "-c", SERVING_SCRIPT, str(config_path)])
    arrays = dict(np.load(root / "served.npz"))
    return arrays, json.loads((root / "served.json").read_text())


@pytest.mark.slow
def test_fresh_process_without_sare_tf_or_keras_loads_and_serves(served):
    _, results = served
    assert results["loaded_forbidden_modules"] == []
    for key in ("float32", "bf16"):
        assert {"serving_default", "serve_jpeg"} <= set(results["signatures"][key])
    assert set(results["dtypes"].values()) == {"float32"}


@pytest.mark.slow
def test_served_float_images_equal_keras_descriptors(exported, served):
    arrays, results = served
    served_desc = arrays["float32_float_batch"]
    expected = keras.ops.convert_to_numpy(exported.model(exported.float_batch, training=False))
    assert served_desc.dtype == np.float32 and served_desc.shape == (2, 512)
    np.testing.assert_allclose(served_desc, expected, rtol=0, atol=1e-5)
    # Different images differ by far more than the tolerance: the comparison is not vacuous.
    assert np.abs(served_desc[0] - served_desc[1]).max() > 1e-2
    # The 64x64 model refuses a 40x56 image, as the Keras model does.
    kind, message = results["errors"]["float32_other_size"]
    assert kind == "InvalidArgumentError" and "image must be 64x64" in message
    with pytest.raises(ValueError, match="incompatible"):
        exported.model(exported.other_size)


@pytest.mark.slow
def test_served_jpeg_and_png_equal_keras_on_the_same_decoded_pixels(exported, served):
    arrays, _ = served
    served_desc = arrays["float32_files"]
    # The pixels the training and evaluation pipelines read from these files (Pillow).
    pixels = _pipeline_pixels(exported.files, IMAGE_SIZE)
    expected = keras.ops.convert_to_numpy(exported.model(pixels, training=False))
    np.testing.assert_allclose(served_desc, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served_desc, axis=1), 1.0, atol=1e-5)
    # The check is sharp enough to see a decoder difference: TensorFlow's default JPEG decode
    # (fast integer DCT, full scale) gives other descriptors for the JPEGs.
    # (load_image itself now decodes JPEGs with the accurate IDCT, like Pillow.)
    for index in (0, 3, 4):
        contents = tf.io.read_file(str(exported.files[index]))
        fast = tf.io.decode_jpeg(contents, channels=3)  # TensorFlow's default dct_method
        tf_default = resize_image(fast, IMAGE_SIZE).numpy()[None]
        other = keras.ops.convert_to_numpy(exported.model(tf_default, training=False))[0]
        assert np.abs(other - served_desc[index]).max() > 1e-4


@pytest.mark.slow
def test_mixed_bfloat16_model_serves_float32_descriptors(exported, served):
    arrays, _ = served
    model = exported.bf16_model
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    pixels = _pipeline_pixels(exported.files, BF16_IMAGE_SIZE)
    in_graph = tf.function(lambda images: model(images, training=False))
    for served_desc, images in (
        (arrays["bf16_files"], pixels),
        (arrays["bf16_float_batch"], exported.float_batch),
        (arrays["bf16_other_size"], exported.other_size),  # any-size model: served as sent
    ):
        assert served_desc.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(served_desc, axis=1), 1.0, atol=1e-5)
        # The Keras model run as a graph uses the same (fused, bfloat16) kernels as serving.
        expected = in_graph(tf.constant(images)).numpy()
        np.testing.assert_allclose(served_desc, expected, rtol=0, atol=1e-5)
        # Eager Keras may round some bfloat16 intermediates differently (about 2^-8 relative);
        # descriptors of different images differ by ~0.1.
        eager = keras.ops.convert_to_numpy(model(images, training=False))
        np.testing.assert_allclose(served_desc, eager, rtol=0, atol=5e-3)


@pytest.mark.slow
def test_corrupt_bytes_fail_with_a_message_naming_the_problem(served):
    _, results = served
    kind, message = results["errors"]["garbage_second"]
    assert kind == "InvalidArgumentError"
    assert "image_bytes[1] (20 bytes) is not a JPEG, PNG, GIF or BMP image" in message
    kind, message = results["errors"]["truncated_first"]
    assert kind == "InvalidArgumentError"
    assert "Invalid JPEG data" in message


def _signature_blocks(show_output: str) -> dict[str, str]:
    blocks = {}
    for chunk in show_output.split("signature_def[")[1:]:
        name, _, body = chunk.partition("]")
        blocks[name.strip("'")] = body
    return blocks


@pytest.mark.slow
def test_saved_model_cli_show_lists_both_signatures(exported):
    output = _run([_saved_model_cli(), "show", "--dir", str(exported.root / "float32"), "--all"])
    blocks = _signature_blocks(output)
    default, jpeg = blocks["serving_default"], blocks["serve_jpeg"]
    assert (
        "inputs['image'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, -1, -1, 3)"
        in default
    )
    assert (
        "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in jpeg
    )
    for body in (default, jpeg):
        assert (
            "outputs['descriptor'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 512)"
            in body
        )
        assert "Method name is: tensorflow/serving/predict" in body


@pytest.mark.slow
def test_saved_model_cli_run_both_signatures(exported, tmp_path):
    with open(exported.files[0], "rb") as file:
        np.save(tmp_path / "bytes.npy", np.array([file.read()], dtype=object))
    runs = {
        "serving_default": (f"image={exported.root / 'float_batch.npy'}", exported.float_batch),
        "serve_jpeg": (
            f"image_bytes={tmp_path / 'bytes.npy'}",
            _pipeline_pixels(exported.files[:1], IMAGE_SIZE),
        ),
    }
    for signature, (inputs, pixels) in runs.items():
        out = tmp_path / signature
        _run(
            [
                _saved_model_cli(),
                "run",
                "--dir",
                str(exported.root / "float32"),
                "--tag_set",
                "serve",
                "--signature_def",
                signature,
                "--inputs",
                inputs,
                "--outdir",
                str(out),
            ]
        )
        expected = keras.ops.convert_to_numpy(exported.model(pixels, training=False))
        np.testing.assert_allclose(np.load(out / "descriptor.npy"), expected, rtol=0, atol=1e-5)


def test_export_needs_an_image_size_for_any_size_models(tmp_path):
    any_size = build_embedding_model("tiny", num_clusters=2, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="image_size=None"):
        export_saved_model(any_size, tmp_path / "a")
    fixed = build_embedding_model("tiny", num_clusters=2, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"fixed input size \(32, 32\)"):
        export_saved_model(fixed, tmp_path / "b", image_size=(48, 48))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="Refusing to overwrite"):
        export_saved_model(fixed, tmp_path / "c")
    assert sorted(os.listdir(tmp_path)) == ["c"]  # nothing written by the refused exports


def _read_info(version_dir):
    with open(os.path.join(version_dir, "assets.extra", "export_info.json")) as file:
        return json.load(file)


@pytest.mark.slow
def test_exporting_twice_gives_versions_1_and_2_with_keras_copies(tmp_path):
    model = _tiny_model((32, 32, 3), seed=3, sample_size=(32, 32))
    first = export_versioned(model, tmp_path, "tiny", source_model="made in a test")
    second = export_versioned(model, tmp_path, "tiny")
    assert (first.version, second.version) == (1, 2)
    assert sorted(os.listdir(tmp_path / "tiny")) == ["1", "1.keras", "2", "2.keras"]
    assert list_versions(tmp_path / "tiny") == [1, 2] and next_version(tmp_path, "tiny") == 3
    info = _read_info(first.saved_model_dir)
    assert info["version"] == 1 and info["name"] == "tiny"
    assert info["sare_tf_version"] == sare_tf.__version__
    assert info["image_size"] == [32, 32] and info["descriptor_dim"] == 4 * 128
    assert info["source_model"] == "made in a test" and info["pca_whitening_dim"] is None
    assert info["signatures"]["serve_jpeg"]["inputs"] == {
        "image_bytes": {"dtype": "string", "shape": [None]}
    }
    # The .keras copy is the same model: same descriptors.
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    reloaded = keras.saving.load_model(second.keras_path)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )


def test_explicit_versions_are_never_overwritten(tmp_path):
    model = build_embedding_model("tiny", num_clusters=2, input_shape=(32, 32, 3))
    assert export_versioned(model, tmp_path, "m", version=5, keras_copy=False).version == 5
    with pytest.raises(FileExistsError, match="Version 5 of 'm' already exists"):
        export_versioned(model, tmp_path, "m", version=5)
    assert export_versioned(model, tmp_path, "m", keras_copy=False).version == 6
    assert sorted(os.listdir(tmp_path / "m")) == ["5", "6"]
    with pytest.raises(ValueError, match="model name"):
        export_versioned(model, tmp_path, "../escape")


class _OpaqueScale(keras.layers.Layer):
    """Traces fine, but cannot be written to .keras: its argument is not serialisable."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor.value


@pytest.mark.slow
def test_an_export_failing_midway_leaves_no_partial_version(tmp_path):
    good = build_embedding_model("tiny", num_clusters=2, input_shape=(32, 32, 3))
    assert export_versioned(good, tmp_path, "m").version == 1
    inputs = keras.Input((32, 32, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    unsavable = keras.Model(inputs, _OpaqueScale(types.SimpleNamespace(value=2.0))(pooled))
    # The SavedModel is staged completely, then writing the .keras copy fails.
    with pytest.raises(ValueError, match="Could not write the Keras copy"):
        export_versioned(unsavable, tmp_path, "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "1.keras"]  # no 2/, no staging folder
    # With no copy requested the same model exports, as the next version.
    assert export_versioned(unsavable, tmp_path, "m", keras_copy=False).version == 2


def _write_pca_dataset(root, count):
    rng = np.random.default_rng(5)
    names = []
    for index in range(count):
        name = f"db/{index:03d}.png"
        (root / "db").mkdir(exist_ok=True)
        blocks = rng.integers(0, 256, (4, 4, 3))
        _write_image(root / name, np.kron(blocks, np.ones((10, 12, 1))).astype(np.uint8))
        names.append(name)
    dataset = GeoDataset(
        names, rng.uniform(0, 500, (count, 2)), names[:2], rng.uniform(0, 500, (2, 2))
    )
    return write_dbstruct(root / "pca.mat", dataset, "train"), names


@pytest.mark.slow
def test_cli_export_with_pca_whitening(tmp_path, capsys):
    model = _tiny_model((32, 32, 3), seed=4, sample_size=(32, 32))
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    mat_path, names = _write_pca_dataset(tmp_path, count=12)
    root = str(tmp_path / "models")
    argv = ["export", "--model", model_path, "--name", "cli", "--root", root]
    assert cli_main([*argv, "--pca-dim", "8"]) == 2  # --pca-from missing: a message, no traceback
    assert "--pca-dim and --pca-from go together" in capsys.readouterr().err
    pca_args = ["--pca-dim", "8", "--pca-from", mat_path, "--image-root", str(tmp_path)]
    assert cli_main([*argv, *pca_args]) == 0
    assert "Exported cli version 1" in capsys.readouterr().out
    assert list_versions(os.path.join(root, "cli")) == [1]
    info = _read_info(os.path.join(root, "cli", "1"))
    assert info["descriptor_dim"] == 8 and info["pca_whitening_dim"] == 8
    assert info["source_model"] == model_path

    # Independent float64 check of the fit: the layer's mean is the mean NetVLAD descriptor of
    # the database images, and its projection whitens their covariance (P^T C P = I).
    pixels = _pipeline_pixels([str(tmp_path / name) for name in names], (32, 32))
    netvlad_model = keras.Model(model.input, model.get_layer("netvlad").output)
    netvlad = keras.ops.convert_to_numpy(netvlad_model(pixels)).astype(np.float64)
    whitened_model = keras.saving.load_model(os.path.join(root, "cli", "1.keras"))
    pca = whitened_model.get_layer("pca_whitening")
    mean = keras.ops.convert_to_numpy(pca.mean).astype(np.float64)
    projection = keras.ops.convert_to_numpy(pca.projection).astype(np.float64)
    np.testing.assert_allclose(mean, netvlad.mean(axis=0), atol=1e-6)
    centred = netvlad - netvlad.mean(axis=0)
    covariance = centred.T @ centred / len(names)
    # P = U diag(1 / sqrt(l + 1e-9)), so P^T C P = diag(l / (l + 1e-9)) for the top 8 l.
    eigenvalues = np.sort(np.linalg.eigvalsh(covariance))[::-1][:8]
    np.testing.assert_allclose(
        projection.T @ covariance @ projection,
        np.diag(eigenvalues / (eigenvalues + 1e-9)),
        atol=1e-5,
    )

    # The served descriptor is L2((x - mean) P) of the served image's NetVLAD vector.
    served = tf.saved_model.load(os.path.join(root, "cli", "1"))
    with open(tmp_path / names[3], "rb") as file:
        got = served.signatures["serve_jpeg"](image_bytes=tf.constant([file.read()]))["descriptor"]
    expected = (netvlad[3] - mean) @ projection
    np.testing.assert_allclose(got.numpy()[0], expected / np.linalg.norm(expected), atol=1e-4)


def test_serving_decoder_gives_the_training_readers_pixels(tmp_path):
    """Pixel-exact against `read_rgb` (Pillow), the reader of training and evaluation."""
    rng = np.random.default_rng(7)
    noisy = np.clip(
        np.kron(rng.integers(0, 256, (6, 6, 3)), np.ones((25, 25, 1)))
        + rng.normal(0, 15, (150, 150, 3)),
        0,
        255,
    ).astype(np.uint8)
    palette = Image.fromarray(noisy).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    files = {
        "jpeg 4:2:0": ("a.jpg", Image.fromarray(noisy), {"quality": 80}),
        "jpeg 4:4:4": ("b.jpg", Image.fromarray(noisy), {"quality": 95, "subsampling": 0}),
        "jpeg progressive": ("c.jpg", Image.fromarray(noisy), {"progressive": True}),
        "jpeg gray": ("d.jpg", Image.fromarray(noisy[..., 0]), {}),
        "png rgb": ("e.png", Image.fromarray(noisy), {}),
        "png rgba": ("f.png", Image.fromarray(np.dstack([noisy, noisy[..., 1]]), "RGBA"), {}),
        "png gray+alpha": ("g.png", Image.fromarray(noisy[..., :2].copy(), "LA"), {}),
        "png 16-bit gray": (
            "h.png",
            Image.fromarray(noisy[..., 0].astype(np.uint16) * 257 + 100),
            {},
        ),
        "png 4-bit palette": ("i.png", palette, {}),
        "png palette + tRNS": ("j.png", palette, {"transparency": 3}),
        "gif": ("k.gif", palette, {}),
        "bmp": ("l.bmp", Image.fromarray(noisy), {}),
    }
    from sare_tf.data.graph_decoding import decode_like_pipeline
    from sare_tf.data.images import read_rgb

    for label, (name, image, options) in files.items():
        image.save(tmp_path / name, **options)
        contents = tf.constant((tmp_path / name).read_bytes())
        for size in ((150, 150), (64, 64), (32, 32)):  # JPEGs decode at 1, 1/2 and 1/4 scale
            expected = read_rgb(str(tmp_path / name), size)
            got = decode_like_pipeline(contents, size).numpy()
            assert got.shape == expected.shape, (label, size)
            assert np.array_equal(got, expected), (
                label,
                size,
                np.abs(got - expected.astype(int)).max(),
            )
