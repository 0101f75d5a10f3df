"""The GPU cuDNN backend, on CPU: its call through `jax.nn.dot_product_attention(implementation="xla")` (the same
rotation of left-padded rows and the same sequence lengths the cuDNN call gets) equals the dense reference in
values and gradients; cuDNN is asked only for what it takes, and every other call falls back to the XLA paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.attention import CudnnAttention, Visibility, XlaAttention, reference_attention, select_backend
from common.attention.cudnn import fused_applies
from tests.common.test_attention_blockwise import _inputs, assert_matches_reference


def _causal(T, start):
    return Visibility(query_slots=jnp.arange(T, dtype=jnp.int32), start=jnp.asarray(start, jnp.int32), prefix=None,
                      key_length=T)


@pytest.fixture
def asked(monkeypatch):
    """The implementations `jax.nn.dot_product_attention` is asked for; each call runs through XLA (no GPU)."""
    calls = []
    original = jax.nn.dot_product_attention

    def spy(*args, implementation=None, **kwargs):
        calls.append(implementation)
        return original(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("heads", [(4, 2), (4, 4)])  # GQA, MHA
def test_the_fused_call_through_xla_equals_the_reference(heads, asked):
    q, k, v, cotangent = _inputs(13, 13, *heads)
    vis = _causal(13, [0, 5, 12])  # whole, left-padded, one token
    assert_matches_reference(CudnnAttention(implementation="xla").attend, q, k, v, cotangent, vis)
    assert set(asked) == {"xla"}


def test_bfloat16_goes_to_cudnn(asked):
    q, k, v, _ = _inputs(16, 16, 4, 2, h=16, dtype=jnp.bfloat16)
    vis = _causal(16, [0, 5, 15])
    out = CudnnAttention().attend(q, k, v, vis)  # the spy runs cuDNN's arguments through XLA
    assert asked == ["cudnn"] and out.dtype == jnp.bfloat16
    seen = np.asarray(vis.mask().any(-1))[:, :, None, None]
    ref = reference_attention(q, k, v, vis.mask(), accumulate_f32=True)
    np.testing.assert_allclose(np.asarray(out, np.float32) * seen, np.asarray(ref, np.float32) * seen,
                               atol=3e-2, rtol=3e-2)


def test_cudnn_is_asked_only_for_what_it_takes():
    vis = _causal(16, [0, 0])
    qkv = lambda dtype, h=64: (jnp.zeros((2, 16, 4, h), dtype), jnp.zeros((2, 16, 2, h), dtype))  # noqa: E731
    assert fused_applies(*qkv(jnp.bfloat16), vis) and fused_applies(*qkv(jnp.float16, 128), vis)
    assert not fused_applies(*qkv(jnp.float32), vis)  # float32: blockwise
    assert not fused_applies(*qkv(jnp.bfloat16, 12), vis) and not fused_applies(*qkv(jnp.bfloat16, 256), vis)
    prefixed = Visibility(vis.query_slots, vis.start, jnp.asarray([2, 0]), 16)
    assert not fused_applies(*qkv(jnp.bfloat16), prefixed)  # a shared prefix: blockwise
    q, k = qkv(jnp.bfloat16)
    assert not fused_applies(q[:, :1], k, vis) and not fused_applies(q[:, :8], k, vis)  # decode; S > T


def test_what_cudnn_does_not_take_falls_back(asked):
    backend = CudnnAttention()
    q, k, v, cotangent = _inputs(13, 13, 4, 2)
    vis = _causal(13, [0, 5, 12])
    assert "scan" in str(jax.make_jaxpr(backend.attend)(q, k, v, vis))  # float32: blockwise
    assert_matches_reference(backend.attend, q, k, v, cotangent, vis)
    assert asked == []
    step = Visibility(query_slots=jnp.asarray([9]), start=jnp.asarray([0, 5, 2]), prefix=None, key_length=13)
    decode = (q[:, :1], k, v, step)  # a decode step: the dense product, as the XLA backend runs it
    assert str(jax.make_jaxpr(backend.attend_cached)(*decode)) == \
        str(jax.make_jaxpr(XlaAttention().attend_cached)(*decode))


def test_auto_picks_cudnn_on_gpu():
    assert select_backend("auto", platform="gpu") == CudnnAttention() == select_backend("cudnn")
    assert CudnnAttention.suits("gpu", None) and not CudnnAttention.suits("tpu", None)
