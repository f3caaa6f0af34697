"""What can be chosen by name, as data: the backbones, the losses and the pretrained presets.

This module is the one owner of those names. It imports no TensorFlow, so the command line
offers them as choices (and refuses a typo) before TensorFlow loads. The Keras graphs of the
backbones are built from `BACKBONES` by `sare_tf.model.backbones`; the loss classes behind
`LOSS_NAMES` are picked by `sare_tf.losses.get_loss`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Where and how a backbone is cropped.

    Attributes:
        name: registry key (also the key of its graph builder in `sare_tf.model.backbones`).
        output_layer: layer whose output is the local feature map.
        linear_output: remove the activation of `output_layer` (NetVLAD crops VGG16 at conv5_3
            before its ReLU: negative responses carry information).
        preprocessing: `ImagePreprocessing` mode of its pixels.
        default_trainable_from: first trainable layer by default (None: all trainable).
        channels: D of the feature map.
        stride: spatial reduction of the feature map.
        description: where it is cropped, for users.
        revision: the graph's version under this name; a model saved with an earlier one is
            rebuilt with the backbone `BACKBONE_REVISIONS` names for it.
    """

    name: str
    output_layer: str
    linear_output: bool
    preprocessing: str
    default_trainable_from: str | None
    channels: int
    stride: int
    description: str
    revision: int = 1


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "vgg16", "block5_conv3", True, "caffe", "block5_conv1", 512, 16,
            "VGG16 cropped at conv5_3 before its ReLU (the NetVLAD / SARE setting); 512-d, stride 16.",
        ),
        BackboneSpec(
            "keras-resnet50", "conv4_block6_out", False, "caffe", "conv4_block1_1_conv", 1024, 16,
            "Keras's own ResNet50 (keras.applications, --weights imagenet) cropped after its "
            "conv4 stage; 1024-d, stride 16. Not torchvision's network: use resnet50 for "
            "ported PyTorch weights.",
        ),
        BackboneSpec(
            "resnet18", "layer4_1_out", False, "torch", "layer3_0_conv1", 512, 32,
            "torchvision's ResNet-18 up to layer4 (CosPlace, EigenPlaces); 512-d, stride 32.",
        ),
        BackboneSpec(
            "resnet50", "layer4_2_out", False, "torch", "layer3_0_conv1", 2048, 32,
            "torchvision's ResNet-50 up to layer4 (CosPlace, EigenPlaces); 2048-d, stride 32.",
        ),
        BackboneSpec(
            "resnet101", "layer4_2_out", False, "torch", "layer3_0_conv1", 2048, 32,
            "torchvision's ResNet-101 up to layer4 (CosPlace, EigenPlaces); 2048-d, stride 32.",
        ),
        BackboneSpec(
            "resnet50-layer3", "layer3_5_out", False, "torch", "layer3_0_conv1", 1024, 16,
            "torchvision's ResNet-50 cropped after layer3 (BoQ); 1024-d, stride 16.",
        ),
        BackboneSpec(
            "dinov2-vits14", "patch_tokens", False, "torch", "blocks_10", 384, 14,
            "DINOv2 ViT-S/14 patch tokens before the final norm (BoQ); 384-d, stride 14, any "
            "multiple of 14.",
        ),
        BackboneSpec(
            "dinov2-vitb14", "patch_tokens", False, "torch", "blocks_10", 768, 14,
            "DINOv2 ViT-B/14 patch tokens before the final norm (BoQ); 768-d, stride 14, any "
            "multiple of 14.",
        ),
        BackboneSpec(
            "dinov2-vits14-tokens", "norm", False, "torch", "blocks_10", 384, 14,
            "DINOv2 ViT-S/14 [CLS] + patch tokens after the final norm; 384-d, stride 14, any "
            "multiple of 14; for token aggregators (salad).",
        ),
        BackboneSpec(
            "dinov2-vitb14-tokens", "norm", False, "torch", "blocks_10", 768, 14,
            "DINOv2 ViT-B/14 [CLS] + patch tokens after the final norm (MegaLoc); 768-d, stride "
            "14, any multiple of 14; for token aggregators (salad).",
        ),
        # Before "tiny": a functional .keras file of the plain network is recognised by layer
        # names, which both share (`recognised_backbone` takes the first match).
        BackboneSpec(
            "tiny-plain", "block4_conv2", True, "tf", None, 128, 8,
            "The 8-conv VGG-style network without normalisation that `tiny` was before (files "
            "saved with it load as this); collapses in one Adam step at 1e-3; 128-d, stride 8.",
        ),
        BackboneSpec(
            "tiny", "block4_conv2", False, "tf", None, 128, 8,
            "A small 8-conv VGG-style network with group normalisation, trained from scratch, "
            "for tests and the CPU demo; 128-d, stride 8.",
            revision=2,
        ),
    )
}  # fmt: skip
BACKBONE_NAMES = tuple(BACKBONES)
# (name, revision) a model was saved with -> the backbone that builds that graph today.
BACKBONE_REVISIONS = {("tiny", 1): "tiny-plain"}


def saved_backbone(name: str, revision: int = 1) -> str:
    """The backbone that rebuilds the graph a model saved as `name` at `revision` had."""
    return BACKBONE_REVISIONS.get((name, revision), name)


# Aggregators a model can be built with by name (`sare_tf.model.build_embedding_model`).
AGGREGATOR_NAMES = ("netvlad", "crn-netvlad", "gem", "boq", "salad")


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of backbone `name`, or a ValueError listing the known ones."""
    if name not in BACKBONES:
        raise ValueError(
            f"Unknown backbone. Expected one of {sorted(BACKBONES)}. Received: backbone={name!r}"
        )
    return BACKBONES[name]


# Command-line loss names: the SARE family (Gaussian, Cauchy, exponential kernels; joint or
# independent negatives), the baselines, and the Sec. 7.6 comparison of the SARE paper.
LOSS_NAMES = (
    "sare-joint", "sare-ind", "sare-joint-cauchy", "sare-ind-cauchy", "sare-joint-exp",
    "sare-ind-exp", "triplet", "contrastive", "npair", "angular", "lifted", "geo-classification",
)  # fmt: skip
# The objectives of the SARE paper's Table 6 / Fig. 8 comparison (`sare-tf compare`'s default).
COMPARISON_LOSSES = ("sare-joint", "sare-ind", "triplet", "contrastive", "npair", "angular",
                     "lifted", "geo-classification")  # fmt: skip
# Not tuple losses: trained on single images with their 25 m cell (the recipe's image mode).
IMAGE_LOSSES = ("geo-classification",)

# Which artifact formats each `--runtime` choice runs (`sare_tf.artifacts` owns the formats).
RUNTIME_KINDS = {"tf": ("keras", "saved_model"), "onnx": ("onnx",), "litert": ("litert",)}
# Exported artefacts run by another runtime than TensorFlow (`sare-tf export --format ...`).
RUNTIME_EXPORTS = ("onnx", "litert")
# Keras dtype policies a run may ask for; "auto" picks one for the hardware (`sare_tf.precision`).
PRECISION_POLICIES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# How rankings are read for Recall@N ("auto": from the dataset; `sare_tf.evaluation.protocols`).
RANKING_PROTOCOLS = ("auto", "standard", "tokyo247", "tokyotm")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A released pretrained model `sare-tf import --preset NAME` downloads and imports.

    Attributes:
        name: the preset's name.
        url: where the authors publish the file.
        format: the importer (`sare_tf.convert.FORMATS`).
        licence: the licence as the authors' repository states it.
        trained_on: what the authors trained it on.
        image_size: `(height, width)` recorded in the model: the authors' resolution.
        descriptor_dim: the descriptor size the file must give.
        recall: the authors' Recall@1/5/10 as `{dataset: (r1, r5, r10)}`, from `recall_source`.
        recall_source: where those figures are published (None: none quoted here).
        sha256: the file's sha256 where the authors publish one; otherwise the first download's is
            recorded in the cache and later ones are checked against it.
    """

    name: str
    url: str
    format: str
    licence: str
    trained_on: str
    image_size: tuple[int, int]
    descriptor_dim: int
    recall: dict | None = None
    recall_source: str | None = None
    sha256: str | None = None

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_COSPLACE = "https://github.com/gmberton/CosPlace/releases/download/v1.0/"
_EIGENPLACES = "https://github.com/gmberton/EigenPlaces/releases/download/v1.0/"
_BOQ = "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/"
_BOQ_README = "BoQ's README (Performance)"
PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("cosplace-resnet18-512", _COSPLACE + "ResNet18_512_cosplace.pth", "cosplace",
               "MIT", "SF-XL", (512, 512), 512),
        Preset("cosplace-resnet50-2048", _COSPLACE + "ResNet50_2048_cosplace.pth", "cosplace",
               "MIT", "SF-XL", (512, 512), 2048),
        Preset("eigenplaces-resnet50-2048", _EIGENPLACES + "ResNet50_2048_eigenplaces.pth",
               "eigenplaces", "MIT", "SF-XL", (512, 512), 2048),
        Preset("boq-resnet50-16384", _BOQ + "resnet50_16384.pth", "boq", "MIT", "GSV-Cities",
               (384, 384), 16384,
               {"Pitts30k-test": (92.4, 96.5, 97.4), "MSLS-val": (91.2, 95.3, 96.1)}, _BOQ_README),
        Preset("boq-dinov2-12288", _BOQ + "dinov2_12288.pth", "boq", "MIT", "GSV-Cities",
               (322, 322), 12288,
               {"Pitts30k-test": (93.7, 97.1, 97.9), "MSLS-val": (93.8, 96.8, 97.0)}, _BOQ_README),
        Preset("megaloc", "https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors",
               "megaloc", "MIT", "a mix of VPR and landmark datasets (the MegaLoc paper)",
               (476, 644), 8448),
    )
}  # fmt: skip
PRESET_NAMES = tuple(PRESETS)


def preset_spec(name: str) -> Preset:
    """The `Preset` named `name`, or a ValueError listing the known ones."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset. Expected one of {sorted(PRESETS)}. Received: preset={name!r}"
        )
    return PRESETS[name]
