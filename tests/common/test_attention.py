"""The attention seam (common/attention): the reference against float64 numpy on ragged rows, shared prefixes
and grouped-query heads; the registry's names, "auto" and its errors; the house rule that the decoder and the
sampler call the seam and nothing else; and the decoder training the same on every built-in backend."""

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.attention import (AttentionBackend, BlockwiseAttention, CudnnAttention, SplashAttention, Visibility,
                              XlaAttention, available_backends, select_backend)
from common.attention import registry

COMMON = Path(__file__).resolve().parents[2] / "common"


def _numpy_attention(q, k, v, mask):
    q, k, v = (np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in (q, k, v))
    B, T, H, h = q.shape
    K = k.shape[2]
    q = q.reshape(B, T, K, H // K, h)
    scores = np.einsum("btkgh,bskh->bkgts", q, k) / np.sqrt(h)
    scores = np.where(mask[:, None, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bkgts,bskh->btkgh", probs, v).reshape(B, T, H, h)


def _visibility(T=4, S=10):
    """Row 0 left-padded (starts at slot 3), row 1 with a 2-slot shared prefix and its own tokens from slot 5,
    row 2 whole; queries in slots S-T..S-1."""
    return Visibility(query_slots=jnp.arange(S - T, S, dtype=jnp.int32), start=jnp.asarray([3, 5, 0]),
                      prefix=jnp.asarray([0, 2, 0]), key_length=S)


def test_visibility_mask_is_causal_left_padded_and_sees_the_prefix():
    mask = np.asarray(_visibility(T=2, S=6).mask())
    assert mask.shape == (3, 2, 6)
    np.testing.assert_array_equal(mask[0], [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(mask[1], [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 1]])  # the prefix; its own from 5
    np.testing.assert_array_equal(mask[2], [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("heads", [(4, 4), (6, 2), (7, 1)])  # MHA, GQA, MQA
def test_reference_attention_matches_numpy(dtype, heads):
    H, K = heads
    rng = np.random.default_rng(H)
    B, T, S, h = 3, 4, 10, 16
    q = jnp.asarray(2 * rng.standard_normal((B, T, H, h)), dtype)
    k = jnp.asarray(2 * rng.standard_normal((B, S, K, h)), dtype)
    v = jnp.asarray(rng.standard_normal((B, S, K, h)), dtype)
    vis = _visibility(T, S)
    ref = _numpy_attention(q, k, v, np.asarray(vis.mask()))
    tol = 1e-5 if dtype == "float32" else 3e-2
    for attend in (XlaAttention().attend, XlaAttention().attend_cached):
        out = jax.jit(attend)(q, k, v, vis)
        assert out.shape == (B, T, H, h) and out.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=tol, rtol=tol)


def test_training_attention_differentiates():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((1, 3, 2, 8)), jnp.float32) for _ in range(3))
    vis = Visibility(query_slots=jnp.arange(3), start=jnp.zeros((1,), jnp.int32), prefix=None, key_length=3)
    grad = jax.grad(lambda q: XlaAttention().attend(q, k, v, vis).sum())(q)
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0


class _Fake(AttentionBackend):
    name = "fake"

    def attend(self, q, k, v, visibility):
        return q

    @classmethod
    def suits(cls, platform, mesh):
        return platform == "tpu"


class _EntryPoint:
    def __init__(self, obj):
        self.obj = obj

    def load(self):
        return self.obj


BUILTIN = ["xla", "blockwise", "splash", "cudnn"]


def test_registry_names_auto_and_errors(monkeypatch):
    assert available_backends()[:5] == ["auto", *BUILTIN]
    assert select_backend("xla") == XlaAttention() and select_backend(XlaAttention()) == XlaAttention()
    assert select_backend("blockwise") == BlockwiseAttention() != BlockwiseAttention(64, 128)
    with pytest.raises(ValueError, match=r"unknown attention backend 'flash'; known here: \['auto', 'xla', 'blockw"):
        select_backend("flash")
    monkeypatch.setattr(registry, "_plugins", lambda: {"fake": _EntryPoint(_Fake), "broken": _EntryPoint(dict)})
    registry.backend_class.cache_clear()
    try:
        assert available_backends() == ["auto", *BUILTIN, "broken", "fake"]
        with pytest.warns(RuntimeWarning, match="'broken' could not be loaded"):  # named, then skipped
            assert isinstance(select_backend("auto", platform="tpu"), _Fake)  # a plugin that suits, before splash
        with pytest.warns(RuntimeWarning, match="'broken' could not be loaded"):
            assert type(select_backend("auto", platform="cpu")) is XlaAttention  # none suits: the reference
        with pytest.raises(TypeError, match="not an AttentionBackend"):
            select_backend("broken")
    finally:
        registry.backend_class.cache_clear()


def test_auto_takes_the_built_in_kernel_of_the_platform(monkeypatch):
    monkeypatch.setattr(registry, "_plugins", dict)  # whatever is installed here
    assert select_backend("auto", platform="tpu") == SplashAttention()
    assert select_backend("auto", platform="gpu") == CudnnAttention()
    assert type(select_backend("auto", platform="cpu")) is XlaAttention
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]).reshape(2, 1, 1), ("data", "fsdp", "tensor"))
    assert type(select_backend("auto", mesh=mesh)) is XlaAttention  # the mesh's platform: cpu


class _TpuDevice:
    platform = "tpu"


def test_auto_asks_the_mesh_for_its_platform(monkeypatch):
    """A mesh of TPU devices (a slice compiled for ahead of time on this CPU host) gets the TPU's backend."""
    monkeypatch.setattr(registry, "_plugins", dict)

    class Mesh:
        devices = np.asarray([_TpuDevice()])
        size = 1

    assert type(select_backend("auto", mesh=Mesh())) is SplashAttention


def test_the_decoder_and_the_sampler_call_the_seam_and_nothing_else():
    """No kernel imports, no packed weights ("panels"), no CPU switches or platform branches in common/."""
    for path in COMMON.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+cpu_kernels|import_module\(.cpu_kernels", text, re.M), path
        assert not re.search(r"\bpanels\b|QRR_CPU|common\.kernels", text), path
    for name in ("model.py", "sampler.py"):
        text = (COMMON / name).read_text()
        assert "default_backend" not in text and "os.environ" not in text, name


@functools.cache
def _decoder_logits_and_grads(attention):
    """The tiny model on two left-padded rows of 150 tokens (several blockwise tiles, two splash tiles) ->
    (logits of the real tokens, parameter gradients of their mean square)."""
    from flax import nnx

    from common.config import get_preset
    from common.model import Decoder

    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 512, (2, 150)), jnp.int32)
    start = jnp.asarray([0, 20], jnp.int32)
    graph, params = nnx.split(Decoder(get_preset("tiny"), attention=attention, rngs=nnx.Rngs(0)))

    def loss(params):
        logits, _ = nnx.merge(graph, params).forward(tokens, start=start)
        return jnp.mean(logits[:, 20:] ** 2), logits[:, 20:]

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, grads


@pytest.mark.parametrize("backend", [BlockwiseAttention(32, 64), CudnnAttention(implementation="xla"),
                                     SplashAttention(block_q=128, block_k=128, interpret=True)], ids=repr)
def test_the_decoder_trains_the_same_on_every_backend(backend):
    (ref, ref_grads), (out, grads) = _decoder_logits_and_grads(XlaAttention()), _decoder_logits_and_grads(backend)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=1e-5)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-6, rtol=1e-4)
