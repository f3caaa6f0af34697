"""Optimal-transport aggregation with a scene token, as SALAD defines it and MegaLoc uses it.

    tokens [B, 1 + N, C]  ([CLS] first, then the N patch tokens)
      scene token  t = MLP_t(cls)                          -> [B, token_dim]
      features     f = MLP_f(patches)                      -> [B, N, cluster_dim]
      scores       s = MLP_s(patches)                      -> [B, N, K]
      P = exp(Sinkhorn(s with a dustbin row of value z))    -> [B, K, N] (dustbin dropped)
      V_k = sum_n P[k, n] f_n, each column L2-normalised over cluster_dim
      descriptor = L2([ L2(t), V flattened dimension-major (index d * K + k) ])
      [optional] -> Linear(out_dim) -> L2                   (MegaLoc's 8448-d projection)

Sinkhorn: log-domain, 3 iterations, regularisation 1, marginals `a_k = 1 / (N + K)` for the K
clusters and `(N - K) / (N + K)` for the dustbin, `b_n = 1 / (N + K)`, the result scaled back by
`N + K`; it needs more patches than clusters (N > K), as in the authors' code. The MLPs are
Linear -> ReLU -> Linear (the patch ones are 1x1 convolutions in torch: the same per token).

Reference: Izquierdo & Civera, "Optimal Transport Aggregation for Visual Place Recognition"
(SALAD), CVPR 2024, eqs. (2)-(6) (the idea; SALAD's code is GPL-3.0 and not used); Berton &
Masone, "MegaLoc: One Retrieval to Place Them All", 2025, whose MIT-licensed model definition
gives the layout and constants.
"""

from __future__ import annotations

import keras
from keras import ops

from sare_tf.layers._dtype import float32_compute_policy
from sare_tf.layers.building_blocks import add_dense, check_positive_ints
from sare_tf.layers.netvlad import l2_normalize

SINKHORN_ITERATIONS = 3


def sinkhorn_log_assignment(scores, dustbin, iterations: int = SINKHORN_ITERATIONS):
    """`[B, K, N]` log transport plan of `scores` (`[B, K, N]`) with a dustbin row, dustbin
    removed; exp of it is the soft assignment of each patch to the clusters.

    The marginals and the final scaling by `N + K` are the authors' (module docstring).
    """
    num_clusters, num_patches = scores.shape[1], ops.shape(scores)[2]
    batch = ops.shape(scores)[0]
    dust = ops.broadcast_to(ops.reshape(dustbin, (1, 1, 1)), (batch, 1, num_patches))
    costs = ops.concatenate([scores, ops.cast(dust, scores.dtype)], axis=1)  # [B, K+1, N]
    total = ops.cast(num_patches + num_clusters, "float32")
    norm = -ops.log(total)
    dustbin_mass = ops.log(ops.cast(num_patches - num_clusters, "float32"))
    log_a = ops.concatenate(
        [ops.full((num_clusters,), norm), ops.reshape(norm + dustbin_mass, (1,))], axis=0
    )[None, :]  # [1, K+1]
    log_b = ops.ones((1, num_patches)) * norm  # [1, N]
    u = ops.zeros_like(costs[:, :, 0])
    v = ops.zeros_like(costs[:, 0, :])
    for _ in range(iterations):
        u = log_a - ops.logsumexp(costs + v[:, None, :], axis=2)
        v = log_b - ops.logsumexp(costs + u[:, :, None], axis=1)
    log_plan = costs + u[:, :, None] + v[:, None, :] - norm
    return log_plan[:, :num_clusters, :]


def mlp(x, first, second):
    """Linear -> ReLU -> Linear; `first` and `second` are (kernel, bias) pairs."""
    return ops.matmul(ops.relu(ops.matmul(x, first[0]) + first[1]), second[0]) + second[1]


@keras.saving.register_keras_serializable(package="sare_tf")
class Salad(keras.layers.Layer):
    """Optimal-transport aggregation of [CLS] + patch tokens (module docstring).

    Args:
        num_clusters: K (64 in MegaLoc).
        cluster_dim: per-cluster feature size (256 in MegaLoc).
        token_dim: scene-token size (256).
        mlp_dim: hidden size of the three MLPs (512).
        output_dim: a final Linear to this size, then L2 (MegaLoc: 8448); None for none.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `[B, 1 + N, C]` tokens, [CLS] first.

    Returns:
        `[B, output_dim or token_dim + K * cluster_dim]` float32 unit-norm descriptors.
    """

    def __init__(
        self,
        num_clusters: int = 64,
        cluster_dim: int = 256,
        token_dim: int = 256,
        mlp_dim: int = 512,
        output_dim: int | None = None,
        **kwargs,
    ):
        check_positive_ints(
            num_clusters=num_clusters, cluster_dim=cluster_dim, token_dim=token_dim, mlp_dim=mlp_dim
        )
        kwargs["dtype"] = float32_compute_policy(kwargs.get("dtype"))
        super().__init__(**kwargs)
        self.num_clusters, self.cluster_dim, self.token_dim = num_clusters, cluster_dim, token_dim
        self.mlp_dim, self.output_dim = mlp_dim, output_dim
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"Salad needs a known channel count. Received: input_shape={input_shape}"
            )
        c, h = int(channels), self.mlp_dim
        self.token_mlp = (
            add_dense(self, "token_1", c, h),
            add_dense(self, "token_2", h, self.token_dim),
        )
        self.cluster_mlp = (
            add_dense(self, "cluster_1", c, h),
            add_dense(self, "cluster_2", h, self.cluster_dim),
        )
        self.score_mlp = (
            add_dense(self, "score_1", c, h),
            add_dense(self, "score_2", h, self.num_clusters),
        )
        self.dust_bin = self.add_weight(
            name="dust_bin", shape=(), initializer=keras.initializers.Constant(1.0)
        )
        self.projection = None
        if self.output_dim is not None:
            size = self.token_dim + self.num_clusters * self.cluster_dim
            self.projection = add_dense(self, "projection", size, self.output_dim)  # fmt: skip

    def call(self, inputs):
        tokens = ops.cast(inputs, "float32")
        cls, patches = tokens[:, 0], tokens[:, 1:]
        scene = l2_normalize(mlp(cls, *self.token_mlp), axis=-1)
        features = mlp(patches, *self.cluster_mlp)  # [B, N, cluster_dim]
        scores = ops.transpose(mlp(patches, *self.score_mlp), (0, 2, 1))  # [B, K, N]
        assignment = ops.exp(sinkhorn_log_assignment(scores, self.dust_bin))
        clusters = ops.einsum("bkn,bnd->bdk", assignment, features)  # [B, cluster_dim, K]
        clusters = l2_normalize(clusters, axis=1)
        flat = ops.reshape(clusters, (ops.shape(tokens)[0], self.cluster_dim * self.num_clusters))
        descriptor = ops.concatenate([scene, flat], axis=-1)
        if self.projection is None:
            return l2_normalize(descriptor, axis=-1)
        # MegaLoc normalises the concatenation, projects it, then normalises again.
        projected = (
            ops.matmul(l2_normalize(descriptor, axis=-1), self.projection[0]) + self.projection[1]
        )
        return l2_normalize(projected, axis=-1)

    def compute_output_shape(self, input_shape):
        size = self.output_dim or self.token_dim + self.num_clusters * self.cluster_dim
        return (input_shape[0], size)

    def get_config(self):
        return {
            **super().get_config(),
            "num_clusters": self.num_clusters,
            "cluster_dim": self.cluster_dim,
            "token_dim": self.token_dim,
            "mlp_dim": self.mlp_dim,
            "output_dim": self.output_dim,
        }
