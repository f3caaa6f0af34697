"""pytorch-NetVlad and Patch-NetVLAD checkpoints as sare_tf embedding models.

The schema, as the two projects define it (Nanne/pytorch-NetVlad `main.py`, QVPR/Patch-NetVLAD
`patchnetvlad/models/models_generic.py` and `netvlad.py`):

- The file is `torch.save({"epoch", "state_dict", "recalls", "best_score", "optimizer",
  "parallel"})` (pytorch-NetVlad; Patch-NetVLAD's released models keep `"state_dict"`).
- `state_dict` of an `nn.Module` with submodules `encoder`, `pool` and optionally `WPCA`:
  - `encoder`: `torchvision.models.vgg16().features` without its last two children (the ReLU
    after conv5_3 and the last max-pool), an `nn.Sequential` whose convolutions sit at indices
    0, 2 | 5, 7 | 10, 12, 14 | 17, 19, 21 | 24, 26, 28 (max-pools at 4, 9, 16, 23): keys
    `encoder.<i>.weight` `[out, in, 3, 3]` and `encoder.<i>.bias` `[out]`, 3x3, stride 1,
    padding 1, ReLU after each but the last. (`encoder.module.<i>...` when it was wrapped in
    `nn.DataParallel`.)
  - `pool` (NetVLAD): `pool.centroids` `[K, D]`, `pool.conv.weight` `[K, D, 1, 1]` (the soft
    assignment), `pool.conv.bias` `[K]` only with `vladv2=True`. Forward: L2-normalise each
    location over D; `softmax_k(conv(x))`; `vlad[k, d] = sum_n a_nk (x_nd - c_kd)`;
    intra-normalise over d; flatten k-major (`k * D + d`); L2-normalise.
  - `WPCA` (Patch-NetVLAD's `*_WPCA*.pth.tar`): `nn.Sequential(Conv2d(K*D, P, 1), Flatten,
    L2Norm)`: keys `WPCA.0.weight` `[P, K*D, 1, 1]`, `WPCA.0.bias` `[P]`; P = 4096, 512 or 128.
- Pixels: RGB in [0, 1], normalised with the ImageNet mean (0.485, 0.456, 0.406) and standard
  deviation (0.229, 0.224, 0.225) (`ImagePreprocessing("torch")`); images 480 x 640 in both
  projects' Pittsburgh / Tokyo protocols.

sare_tf's NetVLAD flattens the same way (cluster-major), so no permutation is needed here; torch's
NCHW kernels `[out, in, kh, kw]` become Keras's `[kh, kw, in, out]`.
"""

from __future__ import annotations

import numpy as np

# torchvision vgg16.features, cropped at conv5_3 (children [:-2]): (kind, torch index, Keras name).
VGG16_ENCODER = (
    ("conv", 0, "block1_conv1"), ("conv", 2, "block1_conv2"), ("pool", 4, "block1_pool"),
    ("conv", 5, "block2_conv1"), ("conv", 7, "block2_conv2"), ("pool", 9, "block2_pool"),
    ("conv", 10, "block3_conv1"), ("conv", 12, "block3_conv2"), ("conv", 14, "block3_conv3"),
    ("pool", 16, "block3_pool"),
    ("conv", 17, "block4_conv1"), ("conv", 19, "block4_conv2"), ("conv", 21, "block4_conv3"),
    ("pool", 23, "block4_pool"),
    ("conv", 24, "block5_conv1"), ("conv", 26, "block5_conv2"), ("conv", 28, "block5_conv3"),
)  # fmt: skip
FORMAT = "pytorch-netvlad"


def state_dict_of(checkpoint, path: str) -> dict:
    """The model's state dict inside a checkpoint, with `nn.DataParallel`'s `module.` removed."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        found = (
            sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        )
        raise ValueError(
            f"{path}: expected a checkpoint dict with a 'state_dict' of tensors (pytorch-NetVlad / "
            f"Patch-NetVLAD). Received: {found}"
        )
    return {key.replace("module.", ""): value for key, value in state.items()}


def _expect(state: dict, key: str, shape: tuple, path: str) -> np.ndarray:
    if key not in state:
        raise ValueError(f"{path}: the state dict has no {key!r} (a {shape} tensor expected).")
    value = state[key]
    if len(value.shape) != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
    ):
        raise ValueError(
            f"{path}: {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)} "
            "(None: any size)."
        )
    return np.asarray(value, np.float32)


def check_schema(state: dict, path: str) -> dict:
    """Every tensor of the schema, checked by name and shape; returns them converted to Keras.

    Raises:
        ValueError: a missing, unexpected or wrongly shaped key (named, with both shapes).
    """
    layers, channels = {}, 3
    for kind, index, name in VGG16_ENCODER:
        if kind != "conv":
            continue
        weight = _expect(state, f"encoder.{index}.weight", (None, channels, 3, 3), path)
        bias = _expect(state, f"encoder.{index}.bias", (weight.shape[0],), path)
        layers[name] = (weight.transpose(2, 3, 1, 0), bias)
        channels = weight.shape[0]
    centroids = _expect(state, "pool.centroids", (None, channels), path)
    num_clusters = centroids.shape[0]
    assignment = _expect(state, "pool.conv.weight", (num_clusters, channels, 1, 1), path)
    bias = (
        _expect(state, "pool.conv.bias", (num_clusters,), path)
        if "pool.conv.bias" in state
        else None
    )
    converted = {
        "encoder": layers,
        "centroids": centroids,
        "assignment_kernel": assignment.transpose(2, 3, 1, 0),
        "assignment_bias": bias,
        "pca": None,
    }
    if "WPCA.0.weight" in state:
        weight = _expect(state, "WPCA.0.weight", (None, num_clusters * channels, 1, 1), path)
        pca_bias = _expect(state, "WPCA.0.bias", (weight.shape[0],), path)
        converted["pca"] = (weight[:, :, 0, 0].T.copy(), pca_bias)
    expected = {
        f"encoder.{i}.{p}"
        for kind, i, _ in VGG16_ENCODER
        if kind == "conv"
        for p in ("weight", "bias")
    }
    expected |= {
        "pool.centroids",
        "pool.conv.weight",
        "pool.conv.bias",
        "WPCA.0.weight",
        "WPCA.0.bias",
    }
    unexpected = sorted(set(state) - expected)
    if unexpected:
        raise ValueError(
            f"{path}: unexpected keys for a pytorch-NetVlad / Patch-NetVLAD VGG16 model: "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    return converted


def build_model(converted: dict, image_size=(480, 640), name: str = "imported_netvlad"):
    """The sare_tf embedding model with the converted weights (float32)."""
    import keras

    from sare_tf.layers import ImagePreprocessing, NetVLAD, PCAWhitening

    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    x = ImagePreprocessing("torch", image_size=image_size, name="preprocess")(inputs)
    convs = [name for kind, _, name in VGG16_ENCODER if kind == "conv"]
    created = {}
    for kind, _, layer_name in VGG16_ENCODER:
        if kind == "pool":
            x = keras.layers.MaxPooling2D(2, name=layer_name)(x)
            continue
        kernel, bias = converted["encoder"][layer_name]
        # conv5_3 is linear: NetVLAD crops VGG16 before its last ReLU.
        activation = None if layer_name == convs[-1] else "relu"
        layer = keras.layers.Conv2D(
            kernel.shape[-1], 3, padding="same", activation=activation, name=layer_name
        )
        x = layer(x)
        created[layer_name] = layer
    netvlad = NetVLAD(
        converted["centroids"].shape[0],
        assignment_bias=converted["assignment_bias"] is not None,
        name="netvlad",
    )
    descriptor = netvlad(x)
    if converted["pca"] is not None:
        projection, pca_bias = converted["pca"]
        pca = PCAWhitening(projection.shape[1], use_bias=True, name="pca_whitening")
        descriptor = pca(descriptor)
    descriptor = keras.layers.Activation("linear", dtype="float32", name="descriptor")(descriptor)
    model = keras.Model(inputs, descriptor, name=name)
    for layer_name, layer in created.items():
        kernel, bias = converted["encoder"][layer_name]
        layer.set_weights([kernel, bias])
    netvlad.assignment_kernel.assign(converted["assignment_kernel"])
    netvlad.centroids.assign(converted["centroids"])
    if netvlad.bias is not None:
        netvlad.bias.assign(converted["assignment_bias"])
    # alpha only marks the layer as initialised (the kernel is the checkpoint's, not alpha * c).
    netvlad.alpha.assign(float(np.linalg.norm(converted["assignment_kernel"], axis=2).mean()))
    if converted["pca"] is not None:
        pca.mean.assign(np.zeros(pca.mean.shape, np.float32))
        pca.projection.assign(projection)
        pca.bias.assign(pca_bias)
    return model
