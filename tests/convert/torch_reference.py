"""Tiny VGG16 + NetVLAD torch modules in each project's layout, and a numpy forward pass of
them written from the sources' definitions (NCHW), independent of sare_tf."""

from __future__ import annotations

import numpy as np

from sare_tf.bench.torch_models import build_vgg16_conv5_3

# vgg16.features[:-2] with tiny channel counts: (out channels, then "M" for a max-pool).
TINY_VGG = [4, 4, "M", 6, 6, "M", 8, 8, 8, "M", 8, 8, 8, "M", 8, 8, 8]
CHANNELS = 8
NUM_CLUSTERS, PCA_DIM = 5, 12
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
OPENIBL_MEAN = np.array([0.48501960784313836, 0.4579568627450961, 0.4076039215686255])


def torch_pixels(images):
    return (images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def openibl_pixels(images):  # Normalize(mean, std=1/255) on ToTensor()'s [0, 1]
    return (images / 255.0 - OPENIBL_MEAN) / (1.0 / 255.0)


def tiny_encoder_and_pool(torch, seed: int, vladv2: bool = False):
    """`vgg16().features[:-2]` (tiny) and pytorch-NetVlad's NetVLAD, trained-looking weights."""
    nn = torch.nn
    torch.manual_seed(seed)
    encoder = build_vgg16_conv5_3(torch, TINY_VGG)  # [:-2] of the full features
    channels = CHANNELS
    assert len(encoder) == 29 and isinstance(encoder[28], nn.Conv2d)
    pool = nn.Module()
    pool.conv = nn.Conv2d(channels, NUM_CLUSTERS, kernel_size=(1, 1), bias=vladv2)
    pool.centroids = nn.Parameter(torch.rand(NUM_CLUSTERS, channels))
    with torch.no_grad():  # as after training: centres among the unit local descriptors,
        # sharp assignments, and conv layers that keep the images apart
        pool.centroids.copy_(
            torch.nn.functional.normalize(torch.randn(NUM_CLUSTERS, channels), dim=1) * 0.5
        )
        pool.conv.weight.copy_(20.0 * pool.centroids[:, :, None, None])
        for layer in encoder:
            if isinstance(layer, nn.Conv2d):
                layer.weight.mul_(3.0)
    return encoder, pool


def as_float64(state_dict) -> dict:
    return {key: value.detach().numpy().astype(np.float64) for key, value in state_dict.items()}


def _conv3x3(x, weight, bias):
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, weight) + bias[None, :, None, None]


def _maxpool(x):
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def normalize(x, axis):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _kinds():
    kinds = []
    for item in TINY_VGG:
        kinds += ["pool"] if item == "M" else ["conv", "relu"]
    return kinds[:-1]  # vgg16.features[:-2]: ends with conv5_3, no ReLU


def reference_descriptors(
    state, images_rgb_0_255, pixels=torch_pixels, encoder="encoder.", pool="pool.",
    projection=None,
):  # fmt: skip
    """The sources' forward pass. `projection`: None or (weight [P, K*D], bias [P]), then L2."""
    x = pixels(images_rgb_0_255).transpose(0, 3, 1, 2)  # NCHW
    for position, kind in enumerate(_kinds()):
        if kind == "pool":
            x = _maxpool(x)
        elif kind == "relu":
            x = np.maximum(x, 0.0)
        else:
            x = _conv3x3(
                x, state[f"{encoder}{position}.weight"], state[f"{encoder}{position}.bias"]
            )
    n, c = x.shape[:2]
    x = normalize(x, axis=1)  # per location, across descriptor dims
    logits = np.einsum("kc,nchw->nkhw", state[f"{pool}conv.weight"][:, :, 0, 0], x)
    if f"{pool}conv.bias" in state:
        logits += state[f"{pool}conv.bias"][None, :, None, None]
    logits = logits.reshape(n, NUM_CLUSTERS, -1)
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    flat = x.reshape(n, c, -1)
    vlad = np.zeros((n, NUM_CLUSTERS, c))
    for k in range(NUM_CLUSTERS):  # the sources' loop over clusters
        residual = flat - state[f"{pool}centroids"][k][None, :, None]
        vlad[:, k, :] = (residual * soft[:, k : k + 1, :]).sum(axis=-1)
    vlad = normalize(normalize(vlad, axis=2).reshape(n, -1), axis=1)
    if projection is not None:
        weight, bias = projection
        vlad = normalize(vlad @ weight.T + bias, axis=-1)
    return vlad


def images(count, seed, size=(48, 64)):
    rng = np.random.default_rng(seed)
    smooth = rng.random((count, size[0] // 8, size[1] // 8, 3))
    return np.clip(
        np.kron(smooth, np.ones((1, 8, 8, 1))) * 255 + rng.normal(0, 12, (count, *size, 3)), 0, 255
    )


def assert_matches(model, reference, seed=2):
    """cosine >= 0.9999, distinct images, and the same top-10 retrieval on a small set."""
    import keras

    def describe(x):
        return keras.ops.convert_to_numpy(model(x.astype(np.float32)))

    batch = images(6, seed=seed)
    got, want = describe(batch), reference(batch)
    cosine = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999, cosine
    between = want @ want.T / np.outer(np.linalg.norm(want, axis=1), np.linalg.norm(want, axis=1))
    assert between[np.triu_indices(6, 1)].max() < 0.99  # the check is not met by lookalikes
    np.testing.assert_allclose(got, want, atol=2e-4)
    database, queries = images(12, seed=seed + 1), images(3, seed=seed + 2)
    top_got = np.argsort(-(describe(queries) @ describe(database).T), axis=1)[:, :10]
    top_want = np.argsort(-(reference(queries) @ reference(database).T), axis=1)[:, :10]
    np.testing.assert_array_equal(top_got, top_want)
