"""Keras layers of sare_tf: aggregators (NetVLAD, CRN-NetVLAD, GeM, BoQ, Salad), PCA whitening, preprocessing, group normalisation, tuple folding, Conv2D with a faster training gradient."""

from sare_tf.layers.boq import BoQ
from sare_tf.layers.conv2d import Conv2D
from sare_tf.layers.crn import CRNNetVLAD
from sare_tf.layers.gem import GeM, gem_aggregate, gem_pool
from sare_tf.layers.group_normalization import GroupNormalization, group_moments
from sare_tf.layers.image_preprocessing import ImagePreprocessing
from sare_tf.layers.netvlad import NetVLAD, cluster_descriptors, netvlad_aggregate
from sare_tf.layers.pca_whitening import PCAWhitening, fit_pca_whitening
from sare_tf.layers.salad import Salad, sinkhorn_log_assignment
from sare_tf.layers.tuple_folding import FoldTuples, UnfoldTuples

__all__ = [
    "BoQ",
    "CRNNetVLAD",
    "Conv2D",
    "FoldTuples",
    "GeM",
    "GroupNormalization",
    "ImagePreprocessing",
    "NetVLAD",
    "PCAWhitening",
    "Salad",
    "UnfoldTuples",
    "cluster_descriptors",
    "fit_pca_whitening",
    "gem_aggregate",
    "gem_pool",
    "group_moments",
    "netvlad_aggregate",
    "sinkhorn_log_assignment",
]
