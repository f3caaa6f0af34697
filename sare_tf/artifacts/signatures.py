"""The serving graph of an embedding model, written as a self-contained SavedModel.

Two signatures, both returning `{"descriptor": float32 [B, D]}` exactly as the Keras model
computes it (preprocessing, backbone, NetVLAD, optional PCA whitening and L2 normalisation
are all inside the graph):

- `serving_default`: `image`, float32 `[B, H, W, 3]` RGB in [0, 255], run as sent (a model
  built for a fixed size refuses other sizes, as the Keras model does).
- `serve_jpeg`: `image_bytes`, string `[B]` of encoded JPEG / PNG (GIF, BMP) files, decoded
  to the same RGB pixels the training and evaluation input pipelines read from those files
  (`sare_tf.data.images.read_rgb`) and resized with the same op (`resize_image`) to the
  model's image size.

The graph is traced through `keras.export.ExportArchive`, so the SavedModel holds only
TensorFlow ops and variables: it loads with `tf.saved_model.load`, `saved_model_cli` and TF
Serving without sare_tf or Keras.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from sare_tf.artifacts.descriptor_model import resolve_image_size as resolve
from sare_tf.data.graph_decoding import decode_like_pipeline, is_supported_image
from sare_tf.data.images import resize_image
from sare_tf.models import embedding_of

SERVING_DEFAULT = "serving_default"
SERVE_JPEG = "serve_jpeg"
IMAGE_INPUT = "image"
# TF Serving's REST API base64-decodes `{"b64": ...}` values; the `_bytes` suffix also marks
# the tensor as binary in its JSON mapping.
BYTES_INPUT = "image_bytes"
DESCRIPTOR_OUTPUT = "descriptor"

_FORMAT_NAMES = "JPEG, PNG, GIF or BMP"


def serving_model(model: keras.Model) -> keras.Model:
    """Returns the image -> descriptor model to serve, checking its inputs and outputs.

    A tuple model (`[B, 2+N, H, W, 3]` input, as trained) is unwrapped to the embedding model
    inside it.

    Args:
        model: an embedding model or a tuple model wrapping one.

    Returns:
        A model with one `[B, H, W, 3]` input and one `[B, D]` output, D known.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model. Received: model={model!r}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "Only models with one image input and one descriptor output can be exported. "
            f"Received: {len(model.inputs)} inputs and {len(model.outputs)} outputs in {model.name!r}"
        )
    if len(model.inputs[0].shape) == 5:
        model = embedding_of(model)
    input_shape = tuple(model.inputs[0].shape)
    output_shape = tuple(model.outputs[0].shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(
            "The exported model must take RGB images [B, H, W, 3]. "
            f"Received: input_shape={input_shape} of {model.name!r}"
        )
    if len(output_shape) != 2 or output_shape[-1] is None:
        raise ValueError(
            "The exported model must return descriptors [B, D] with D known. "
            f"Received: output_shape={output_shape} of {model.name!r}"
        )
    return model


def resolve_image_size(model: keras.Model, image_size=None) -> tuple[int, int]:
    """The `(height, width)` that `serve_jpeg` resizes decoded images to.

    The size asked for, else the size the model records (`sare_tf.artifacts.descriptor_model`); one of
    the two is required.
    """
    return resolve(
        serving_model(model), image_size, required=True, purpose="serve_jpeg resizes to it"
    )


def decode_image_batch(image_bytes: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
    """Decodes `[B]` encoded images to float32 `[B, height, width, 3]` RGB in [0, 255].

    Pixels are those of the training / evaluation pipeline for the same files
    (`decode_like_pipeline`, then `sare_tf.data.images.resize_image`). Each element is checked
    before decoding: bytes that are not an image fail with an `InvalidArgumentError` naming
    the batch element, e.g. "image_bytes[1] (5 bytes) is not a JPEG, PNG, GIF or BMP image".
    Bytes that look like an image but are broken (a truncated JPEG) fail in the decoder with
    its own message ("Invalid JPEG data ..."). A batch never yields descriptors of undecodable
    input.

    Args:
        image_bytes: string tensor `[B]`.
        image_size: `(height, width)` of the output.

    Returns:
        float32 `[B, height, width, 3]`.
    """
    height, width = image_size

    def decode_one(element):
        index, contents = element
        check = tf.debugging.Assert(
            is_supported_image(contents),
            [
                tf.strings.format(
                    "image_bytes[{}] ({} bytes) is not a " + _FORMAT_NAMES + " image",
                    (index, tf.strings.length(contents)),
                )
            ],
            name="check_image_format",
        )
        with tf.control_dependencies([check]):
            image = decode_like_pipeline(contents, image_size)
        return resize_image(image, (height, width))

    indices = tf.range(tf.shape(image_bytes, out_type=tf.int64)[0])
    return tf.map_fn(
        decode_one,
        (indices, image_bytes),
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
    )


def build_export_archive(model: keras.Model, image_size=None) -> keras.export.ExportArchive:
    """Traces both serving signatures of `model` into an `ExportArchive` (not yet written).

    Args:
        model: embedding model (or tuple model wrapping one).
        image_size: `(height, width)` for `serve_jpeg` (see `resolve_image_size`).

    Returns:
        The archive; `archive.write_out(path, verbose=False)` writes the SavedModel.
    """
    model = serving_model(model)
    size = resolve_image_size(model, image_size)
    fixed = tuple(model.inputs[0].shape[1:3])

    def describe(image):
        if None not in fixed:
            # As the Keras model does: a fixed-size model refuses other sizes rather than
            # returning descriptors of a scale it was never trained on.
            check = tf.debugging.assert_equal(
                tf.shape(image)[1:3],
                tf.constant(fixed, tf.int32),
                message=f"{IMAGE_INPUT} must be {fixed[0]}x{fixed[1]} (height x width) for this "
                f"model; resize it or send the encoded file to {SERVE_JPEG}. Received [height width]",
            )
            with tf.control_dependencies([check]):
                image = tf.identity(image)
        descriptor = model(image, training=False)
        return {DESCRIPTOR_OUTPUT: tf.cast(descriptor, tf.float32)}

    def describe_encoded(image_bytes):
        return describe(decode_image_batch(image_bytes, size))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_DEFAULT,
        describe,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name=IMAGE_INPUT)],
    )
    archive.add_endpoint(
        SERVE_JPEG,
        describe_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
    )
    return archive


def signature_summary(model: keras.Model, image_size=None) -> dict:
    """What the SavedModel serves, as JSON-ready data (for `export_info.json`)."""
    model = serving_model(model)
    size = resolve_image_size(model, image_size)
    depth = int(model.outputs[0].shape[-1])
    output = {DESCRIPTOR_OUTPUT: {"dtype": "float32", "shape": [None, depth]}}
    return {
        SERVING_DEFAULT: {
            "inputs": {IMAGE_INPUT: {"dtype": "float32", "shape": [None, None, None, 3]}},
            "outputs": output,
        },
        SERVE_JPEG: {
            "inputs": {BYTES_INPUT: {"dtype": "string", "shape": [None]}},
            "outputs": output,
            "resized_to": list(size),
        },
    }


def write_saved_model(model: keras.Model, directory, image_size=None) -> None:
    """Writes the SavedModel into `directory` in place (no temporary folder; see
    `export_saved_model` for the atomic version)."""
    build_export_archive(model, image_size).write_out(os.fspath(directory), verbose=False)


def export_saved_model(model: keras.Model, export_dir, image_size=None) -> str:
    """Exports `model` as a SavedModel with `serving_default` and `serve_jpeg` signatures.

    The SavedModel is written to a temporary folder beside `export_dir` and renamed into place,
    so `export_dir` either holds a complete SavedModel or does not exist.

    Args:
        model: embedding model (input "image" RGB 0-255, output "descriptor"), or a tuple
            model wrapping one.
        export_dir: the SavedModel folder to create; it must not exist or be empty.
        image_size: `(height, width)` that `serve_jpeg` resizes to; defaults to the model's
            fixed input size and is required when the model takes any size.

    Returns:
        `export_dir` as a string.

    Example:
        >>> model = build_embedding_model("tiny", num_clusters=4, input_shape=(64, 64, 3))
        >>> export_saved_model(model, "/tmp/tiny_netvlad")
        '/tmp/tiny_netvlad'
        >>> served = tf.saved_model.load("/tmp/tiny_netvlad")  # in any TensorFlow process
        >>> served.signatures["serve_jpeg"](image_bytes=tf.constant([jpeg]))["descriptor"]
    """
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
        raise FileExistsError(
            f"Refusing to overwrite an existing export. Received: export_dir={export_dir!r}"
        )
    # Fail on a bad model or image size before touching the file system.
    archive = build_export_archive(model, image_size)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        archive.write_out(staging, verbose=False)
        os.replace(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return export_dir
