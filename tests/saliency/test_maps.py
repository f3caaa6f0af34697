"""Saliency maps: acceptance properties, planted signals, independent references, precision."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from sare_tf.models import BACKBONES, build_embedding_model
from sare_tf.saliency import METHODS, default_target_layer, normalize_maps, saliency_maps
from sare_tf.saliency import maps as maps_module


def _descriptors(model, images):
    return keras.ops.convert_to_numpy(model(images)).astype("float32")


def _inside(box, shape):
    mask = np.zeros(shape, bool)
    mask[box[0] : box[1], box[2] : box[3]] = True
    return mask


def _minmax(array):
    array = np.asarray(array, dtype="float64")
    low = array.min(axis=(-2, -1), keepdims=True)
    return (array - low) / (array.max(axis=(-2, -1), keepdims=True) - low)


# --- acceptance: size, range, finiteness, not constant; a batch in one call -------------------


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_the_input_size_are_finite_in_unit_range_and_not_constant(
    method, tiny_model, make_images
):
    # 50x70 is not a multiple of the tiny backbone's stride 8: the CAMs must still come back
    # at the input size.
    queries = make_images(3, 50, 70, seed=3)
    references = _descriptors(tiny_model, make_images(3, 50, 70, seed=4))
    maps = saliency_maps(tiny_model, queries, references, method=method, smooth_samples=4)
    assert maps.shape == (3, 50, 70)
    assert maps.dtype == np.float32
    assert np.all(np.isfinite(maps))
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    for heatmap in maps:
        assert heatmap.min() == 0.0 and heatmap.max() == pytest.approx(1.0)
        assert np.std(heatmap) > 0.05  # a real spatial pattern, not a flat map


# --- planted signal ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_saliency_mass_concentrates_in_the_only_region_the_descriptor_sees(
    method, planted_models, make_images
):
    queries = make_images(3, seed=0)
    others = make_images(3, seed=1)
    for name, other in (("A", "B"), ("B", "A")):
        model, box = planted_models[name]
        references = _descriptors(model, others)
        maps = saliency_maps(model, queries, references, method=method, smooth_samples=4)
        mass = maps.sum(axis=(1, 2))
        inside = maps[:, _inside(box, maps.shape[1:])].sum(axis=1) / mass
        in_other_box = maps[:, _inside(planted_models[other][1], maps.shape[1:])].sum(1) / mass
        # The box is 1/6 of the image; > 70 % of the mass lands in it, and the map moves with
        # the box (the other model's box, disjoint from this one, gets almost nothing).
        assert np.all(inside > 0.7), (name, method, inside)
        assert np.all(in_other_box < 0.05), (name, method, in_other_box)


# --- independent references ----------------------------------------------------------------------


def test_vanilla_saliency_matches_a_direct_gradient_tape(tiny_model, make_images):
    queries = make_images(2, seed=5)
    references = _descriptors(tiny_model, make_images(2, seed=6))
    x = tf.constant(queries)
    with tf.GradientTape() as tape:
        tape.watch(x)
        similarity = tf.reduce_sum(tiny_model(x) * references, axis=1)
    gradients = tape.gradient(similarity, x).numpy().astype("float64")
    expected = _minmax(np.abs(gradients).max(axis=-1))
    maps = saliency_maps(tiny_model, queries, references, method="saliency")
    np.testing.assert_allclose(maps, expected, atol=1e-5)


def _feature_and_gradient(model, layer_name, images, references):
    """Target-layer activations A and dS/dA with S = <descriptor, reference>, in one tape."""
    probe = keras.Model(model.input, [model.get_layer(layer_name).output, model.output])
    with tf.GradientTape() as tape:
        features, descriptors = probe(tf.constant(images))
        similarity = tf.reduce_sum(descriptors * references, axis=1)
    gradients = tape.gradient(similarity, features)
    return (
        features.numpy().astype("float64"),
        gradients.numpy().astype("float64"),
        similarity.numpy().astype("float64"),
    )


def test_gradcam_plus_plus_matches_the_closed_form_in_float64(tiny_model, make_images):
    queries = make_images(2, seed=7)
    references = _descriptors(tiny_model, make_images(2, seed=8))
    A, g, s = _feature_and_gradient(tiny_model, "block4_conv2", queries, references)
    # Grad-CAM++ with an exponential score (Chattopadhay et al. 2018, eq. 19):
    # alpha = g^2 / (2 g^2 + sum_ab A_ab g^3), w = sum_ij alpha relu(exp(S) g), L = relu(sum_k w A).
    first = np.exp(s)[:, None, None, None] * g
    second = first * g
    third = second * g
    total = A.sum(axis=(1, 2), keepdims=True)
    denominator = 2 * second + third * total
    alpha = second / np.where(second == 0, 1.0, denominator)
    norm = alpha.sum(axis=(1, 2), keepdims=True)
    alpha = alpha / np.where(norm == 0, 1.0, norm)
    weights = (np.maximum(first, 0) * alpha).sum(axis=(1, 2))
    cam = np.maximum(np.einsum("bhwk,bk->bhw", A, weights), 0)
    cam = np.stack([ndimage.zoom(c, (64 / c.shape[0], 96 / c.shape[1]), order=1) for c in cam])
    maps = saliency_maps(tiny_model, queries, references, method="gradcam++")
    np.testing.assert_allclose(maps, _minmax(cam), atol=1e-4)


def test_scorecam_matches_masking_and_rescoring_by_hand(planted_models, make_images):
    model, _ = planted_models["A"]
    queries = make_images(2, seed=9)
    references = _descriptors(model, make_images(2, seed=12))
    features = keras.Model(model.input, model.get_layer("features").output)(queries).numpy()
    cams = []
    for image, activations, reference in zip(queries, features, references, strict=True):
        factor = (64 / activations.shape[0], 96 / activations.shape[1])
        masked = []
        for k in range(activations.shape[-1]):
            upsampled = ndimage.zoom(activations[..., k], factor, order=1, mode="nearest")
            mask = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min() + 1e-7)
            masked.append(image * mask[..., None])
        whole = _descriptors(model, image[None]).astype("float64")[0] @ reference
        similarity = _descriptors(model, np.stack(masked)).astype("float64") @ reference
        # Channel k weighted by the match "probability" of its masked image, at T = 0.1.
        weights = 1.0 / (1.0 + np.exp(-(similarity - whole) / 0.1))
        cam = np.maximum(np.tensordot(activations.astype("float64"), weights, axes=([-1], [0])), 0)
        cams.append(ndimage.zoom(cam, factor, order=1))
    maps = saliency_maps(model, queries, references, method="scorecam")
    np.testing.assert_allclose(maps, _minmax(np.stack(cams)), atol=1e-4)


# --- batching and pairing ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["saliency", "gradcam++", "scorecam"])
def test_a_batch_gives_the_maps_of_one_image_at_a_time(method, tiny_model, make_images):
    queries = make_images(3, 32, 48, seed=13)
    references = _descriptors(tiny_model, make_images(3, 32, 48, seed=14))
    batched = saliency_maps(tiny_model, queries, references, method=method)
    for i in range(3):
        alone = saliency_maps(tiny_model, queries[i : i + 1], references[i : i + 1], method=method)
        np.testing.assert_allclose(batched[i], alone[0], atol=1e-4)
    # Each image is explained against its own reference: another reference gives another map.
    swapped = saliency_maps(tiny_model, queries[:1], references[1:2], method=method)
    assert np.abs(swapped[0] - batched[0]).max() > 0.05


def test_smoothgrad_pairs_every_noisy_copy_with_its_reference(tiny_model, make_images):
    queries = make_images(3, seed=15)
    references = _descriptors(tiny_model, make_images(3, seed=16))
    vanilla = saliency_maps(tiny_model, queries, references, method="saliency")
    noiseless = saliency_maps(
        tiny_model, queries, references, method="smoothgrad", smooth_samples=3, smooth_noise=0.0
    )
    np.testing.assert_allclose(noiseless, vanilla, atol=1e-5)
    first = saliency_maps(tiny_model, queries, references, method="smoothgrad", smooth_samples=3)
    again = saliency_maps(tiny_model, queries, references, method="smoothgrad", smooth_samples=3)
    other_seed = saliency_maps(
        tiny_model, queries, references, method="smoothgrad", smooth_samples=3, seed=1
    )
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other_seed).max() > 1e-3
    assert np.abs(first - vanilla).max() > 1e-3


def test_scorecam_chunks_and_caps_channels_to_its_memory_budget(
    planted_models, make_images, monkeypatch
):
    model, _ = planted_models["B"]
    queries = make_images(3, seed=17)
    references = _descriptors(model, make_images(3, seed=18))
    whole = saliency_maps(model, queries, references, method="scorecam")
    # Tiled images, masks and masked images for the 32 channels of one 64x96 image.
    per_image = 3 * 32 * 64 * 96 * 3 * 4
    monkeypatch.setattr(maps_module, "SCORECAM_MEMORY_BYTES", per_image)
    chunked = saliency_maps(model, queries, references, method="scorecam")
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    monkeypatch.setattr(maps_module, "SCORECAM_MEMORY_BYTES", per_image // 4)
    with pytest.warns(UserWarning, match="using the 8 highest-variance channels"):
        capped = saliency_maps(model, queries, references, method="scorecam")
    monkeypatch.undo()
    faster = saliency_maps(model, queries, references, method="scorecam", scorecam_max_channels=8)
    np.testing.assert_allclose(capped, faster, atol=1e-5)
    assert np.abs(faster - whole).max() > 1e-3
    # Faster Score-CAM picks each image's own channels: a batch changes nothing.
    first_alone = saliency_maps(
        model, queries[:1], references[:1], method="scorecam", scorecam_max_channels=8
    )
    np.testing.assert_allclose(faster[0], first_alone[0], atol=1e-5)


# --- target layer ---------------------------------------------------------------------------------


def test_default_target_is_the_last_backbone_convolution():
    models = {
        backbone: build_embedding_model(backbone, num_clusters=2, input_shape=(32, 32, 3))
        for backbone in ("vgg16", "tiny")
    }
    for backbone, model in models.items():
        assert default_target_layer(model) == BACKBONES[backbone].output_layer
    assert default_target_layer(models["vgg16"]) == "block5_conv3"
    # conv5_3 of VGG16 is explained end to end (a 2x2 feature map for 32x32 images).
    rng = np.random.default_rng(0)
    image, other = rng.uniform(0, 255, (2, 1, 32, 32, 3)).astype("float32")
    vgg = models["vgg16"]
    heatmap = saliency_maps(vgg, image, _descriptors(vgg, other), method="gradcam++")
    assert heatmap.shape == (1, 32, 32)
    assert np.all(np.isfinite(heatmap)) and heatmap.max() == 1.0


def test_target_layer_is_selectable_by_name(tiny_model, make_images):
    queries = make_images(2, seed=19)
    references = _descriptors(tiny_model, make_images(2, seed=20))
    default = saliency_maps(tiny_model, queries, references, method="gradcam++")
    named = saliency_maps(
        tiny_model, queries, references, method="gradcam++", layer_name="block4_conv2"
    )
    earlier = saliency_maps(
        tiny_model, queries, references, method="gradcam++", layer_name="block3_conv2"
    )
    np.testing.assert_array_equal(named, default)
    assert earlier.shape == default.shape
    assert np.abs(earlier - default).max() > 0.05
    with pytest.raises(ValueError, match="'no_such_layer' is not in model"):
        saliency_maps(tiny_model, queries, references, layer_name="no_such_layer")
    with pytest.raises(ValueError, match=r"feature map \[B, h, w, C\]"):
        saliency_maps(tiny_model, queries, references, layer_name="netvlad")
    with pytest.raises(ValueError, match="explains the input pixels"):
        saliency_maps(tiny_model, queries, references, method="saliency", layer_name="block3_conv2")


def test_an_image_against_its_own_descriptor_has_no_gradient_but_a_scorecam_map(
    planted_models, make_images
):
    model, box = planted_models["A"]
    image = make_images(1, seed=24)
    own = _descriptors(model, image)
    # s = 1 is the maximum of <f(x), f(x)> over unit descriptors: the gradient is 0 there,
    # up to float32 rounding, which a [0, 1] map would blow up into a pattern.
    for method in ("saliency", "gradcam++"):
        with pytest.warns(UserWarning, match=r"Images \[0\] have similarity s = 1"):
            saliency_maps(model, image, own, method=method)
    scorecam = saliency_maps(model, image, own, method="scorecam")
    assert scorecam.max() == 1.0
    assert scorecam[0][_inside(box, scorecam.shape[1:])].sum() / scorecam.sum() > 0.7


def test_bad_arguments_are_refused_with_the_value(tiny_model, make_images):
    queries = make_images(2, seed=21)
    references = _descriptors(tiny_model, make_images(2, seed=25))
    with pytest.raises(ValueError, match="method='gradcam'"):
        saliency_maps(tiny_model, queries, references, method="gradcam")
    with pytest.raises(ValueError, match=r"\[D\] or \[B=2, D\]"):
        saliency_maps(tiny_model, queries, references[:1].repeat(3, axis=0))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        saliency_maps(tiny_model, queries[..., :1], references)
    with pytest.raises(ValueError, match="NaN"):
        saliency_maps(tiny_model, queries * np.nan, references)
    with pytest.raises(ValueError, match="scorecam_temperature=0"):
        saliency_maps(tiny_model, queries, references, method="scorecam", scorecam_temperature=0)
    # One shared reference [D] is broadcast to every image.
    shared = saliency_maps(tiny_model, queries, references[0], method="saliency")
    paired = saliency_maps(tiny_model, queries, references[[0, 0]], method="saliency")
    np.testing.assert_array_equal(shared, paired)


def test_normalize_maps_by_hand():
    maps = np.array([[[1.0, 3.0], [2.0, 5.0]], [[-2.0, -2.0], [-1.0, 0.0]]])
    expected = np.array([[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [0.5, 1.0]]])
    np.testing.assert_allclose(normalize_maps(maps), expected)
    # Gradients of unit descriptors are tiny: the range itself sets the scale, not 1e-7.
    np.testing.assert_allclose(normalize_maps(maps * 1e-9), expected, atol=1e-6)
    with pytest.warns(UserWarning, match=r"constant for images \[1\]"):
        flat = normalize_maps(np.stack([maps[0], np.full((2, 2), 4.0)]))
    np.testing.assert_array_equal(flat[1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"NaN or infinite values for images \[0\]"):
        normalize_maps(np.stack([np.full((2, 2), np.inf), maps[0]]))


# --- mixed precision ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_mixed_bfloat16_models_are_explained_in_float32(method, tiny_model, make_images):
    keras.config.set_dtype_policy("mixed_bfloat16")
    mixed = build_embedding_model("tiny", num_clusters=4, input_shape=(None, None, 3))
    keras.config.set_dtype_policy("float32")
    assert mixed.get_layer("block4_conv2").compute_dtype == "bfloat16"
    mixed.set_weights(tiny_model.get_weights())
    queries = make_images(2, seed=22)
    references = _descriptors(tiny_model, make_images(2, seed=23))
    # Faster Score-CAM (16 of 128 channels) keeps the test short; the path is the same.
    options = {"smooth_samples": 3, "scorecam_max_channels": 16}
    keras.config.set_dtype_policy("mixed_bfloat16")  # the policy a bf16 training run leaves set
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no constant-map warning either
        maps = saliency_maps(mixed, queries, references, method=method, **options)
    assert keras.config.dtype_policy().name == "mixed_bfloat16"  # restored after cloning
    keras.config.set_dtype_policy("float32")
    assert maps.shape == (2, 64, 96) and maps.dtype == np.float32
    assert np.all(np.isfinite(maps)) and np.all(maps.max(axis=(1, 2)) == 1.0)
    # The float32 clone carries the same weights: the maps are those of the float32 model.
    expected = saliency_maps(tiny_model, queries, references, method=method, **options)
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    # The bf16 model itself is left as it was.
    assert mixed.get_layer("block4_conv2").compute_dtype == "bfloat16"


def test_the_float32_clone_is_what_makes_gradcam_plus_plus_work_under_bfloat16(
    tiny_model, make_images
):
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

    from sare_tf.saliency import float32_clone, similarity_model, similarity_score

    keras.config.set_dtype_policy("mixed_bfloat16")
    mixed = build_embedding_model("tiny", num_clusters=4, input_shape=(None, None, 3))
    keras.config.set_dtype_policy("float32")
    queries = make_images(2, 32, 32, seed=26)
    references = np.tile(_descriptors(tiny_model, queries[:1]), (2, 1))
    # tf-keras-vis 0.8.7 multiplies float32 scores with bfloat16 gradients and fails.
    with pytest.raises(tf.errors.InvalidArgumentError, match="bfloat16"):
        GradcamPlusPlus(similarity_model(mixed, references))(
            similarity_score, queries, penultimate_layer="block4_conv2"
        )
    clone = float32_clone(mixed)
    assert all(layer.compute_dtype == "float32" for layer in clone.layers[1:])
    for original, copied in zip(mixed.weights, clone.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(copied), original.numpy())
    assert float32_clone(tiny_model) is tiny_model  # already float32: used as is
