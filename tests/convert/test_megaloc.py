"""MegaLoc's release: a `model.safetensors` written by the safetensors package from MegaLoc's
module layout rebuilt in torch, read by sare_tf's own reader, equal to the torch forward pass."""

from __future__ import annotations

import json
import struct

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from sare_tf.bench.torch_models import build_dinov2_vit, build_megaloc, torch_forward  # noqa: E402
from sare_tf.convert import import_checkpoint  # noqa: E402
from sare_tf.convert.safetensors_file import read_safetensors  # noqa: E402
from sare_tf.layers import sinkhorn_log_assignment  # noqa: E402


def _release(tmp_path):
    vit = build_dinov2_vit(torch, dim=768, depth=12, heads=12, seed=8)
    model = build_megaloc(torch, vit)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model, path


def _images(size, count, seed):
    """Images that differ: each its own colour cast and pattern scale."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        cell = 7 * (1 + index % 4)
        smooth = rng.random((size[0] // cell + 1, size[1] // cell + 1, 3)) * rng.uniform(
            0.2, 1.0, 3
        )
        pattern = np.kron(smooth, np.ones((cell, cell, 1)))[: size[0], : size[1]]
        images.append(np.clip(pattern * 255 + rng.normal(0, 8, (*size, 3)), 0, 255))
    return np.asarray(images, np.float32)


def _sinkhorn_loop(scores, dustbin, iterations):
    """Log-domain Sinkhorn from its definition, element by element, in float64."""
    clusters, patches = scores.shape
    costs = np.vstack([scores, np.full((1, patches), dustbin)])
    norm = -np.log(patches + clusters)
    log_a = [norm] * clusters + [norm + np.log(patches - clusters)]
    log_b = [norm] * patches
    u, v = np.zeros(clusters + 1), np.zeros(patches)
    for _ in range(iterations):
        u = np.array([log_a[k] - np.log(sum(np.exp(costs[k, n] + v[n]) for n in range(patches)))
                      for k in range(clusters + 1)])  # fmt: skip
        v = np.array([log_b[n] - np.log(sum(np.exp(costs[k, n] + u[k]) for k in range(clusters + 1)))
                      for n in range(patches)])  # fmt: skip
    return (costs + u[:, None] + v[None, :] - norm)[:clusters]


@pytest.mark.parametrize("iterations", [3, 50])
def test_sinkhorn_equals_its_definition_and_converges_to_the_marginals(iterations):
    scores = np.random.default_rng(0).normal(size=(2, 4, 30)).astype(np.float32)
    got = np.asarray(sinkhorn_log_assignment(scores, np.float32(1.3), iterations=iterations))
    for image in range(2):
        want = _sinkhorn_loop(scores[image].astype(np.float64), 1.3, iterations)
        np.testing.assert_allclose(got[image], want, atol=2e-5)
    if iterations == 50:  # converged: each cluster's mass is (N + K) * a_k = 1, each patch
        plan = np.exp(got[0])  # gives at most (N + K) * b_n = 1 (the rest to the dustbin)
        np.testing.assert_allclose(plan.sum(axis=1), 1.0, rtol=1e-4)
        assert np.all(plan.sum(axis=0) < 1.0)


@pytest.mark.slow
def test_megaloc_release_at_its_resolution_and_non_square(tmp_path):
    torch_model, path = _release(tmp_path)
    sidecar = import_checkpoint(path, tmp_path / "megaloc.keras", image_size=(322, 322))
    assert sidecar["format"] == "megaloc" and sidecar["model"]["aggregator"] == "salad"
    assert sidecar["model"]["descriptor_dim"] == 40
    model = keras.saving.load_model(tmp_path / "megaloc.keras", compile=False)
    for size in ((322, 322), (224, 308)):
        images = _images(size, 9, seed=size[1])  # 3 queries, 6 database images
        want = torch_forward(torch, torch_model, images)
        got = np.asarray(model.predict(images, batch_size=3, verbose=0))
        assert np.sum(got * want, axis=1).min() >= 0.9999
        # random ViTs map images close together; still farther apart than the tolerance
        assert (want[3:] @ want[3:].T)[np.triu_indices(6, 1)].max() < 0.9999
        np.testing.assert_allclose(got, want, atol=2e-5)
        top_got = np.argsort(-(got[:3] @ got[3:].T), axis=1)[:, :5]
        np.testing.assert_array_equal(top_got, np.argsort(-(want[:3] @ want[3:].T), axis=1)[:, :5])


def test_safetensors_reader_equals_the_package_and_refuses_bad_files(tmp_path):
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.arange(5, dtype=torch.int64),
        "c": torch.randn(2).bfloat16(),
    }
    safetensors_torch.save_file(tensors, tmp_path / "t.safetensors")
    read = read_safetensors(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(read["a"], tensors["a"].numpy())
    np.testing.assert_array_equal(read["b"], tensors["b"].numpy())
    np.testing.assert_array_equal(read["c"], tensors["c"].float().numpy())
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}).encode()
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(ValueError, match="tensor 'w'.*do not fit"):
        read_safetensors(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 40)
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_safetensors(tmp_path / "junk.safetensors")


def test_megaloc_keys_are_checked(tmp_path):
    torch_model = build_megaloc(torch, build_dinov2_vit(torch, dim=768, depth=2, heads=12))
    shallow = {k: v.contiguous() for k, v in torch_model.state_dict().items()}
    safetensors_torch.save_file(shallow, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"no tensors for backbone layers \['blocks_2'"):
        import_checkpoint(tmp_path / "model.safetensors", tmp_path / "m.keras")
    state = {k: v.contiguous() for k, v in torch_model.state_dict().items()}
    state.pop("aggregator.agg.score.3.bias")
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"no 'aggregator\.agg\.score\.3\.bias'"):
        import_checkpoint(tmp_path / "model.safetensors", tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
