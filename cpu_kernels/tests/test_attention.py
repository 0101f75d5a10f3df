"""The CPU decode attention kernel (cpu_kernels/attention) against float64 numpy and against the reference
backend's attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.attention import Visibility, XlaAttention
from cpu_kernels import attention, build
from cpu_kernels.backend import CpuKernels

pytestmark = pytest.mark.skipif(not build.available(), reason="no C++ compiler or CPU support: kernels off")


def _reference(q, keys, values, mask):
    q, keys, values = (np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in (q, keys, values))
    scores = np.einsum("bkgh,bskh->bkgs", q, keys) / np.sqrt(q.shape[-1])
    scores = np.where(mask[:, None, None, :], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bkgs,bskh->bkgh", probs, values)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("h", [64, 20])  # whole 16-float vectors, and a remainder
def test_decode_attention_matches_numpy(dtype, h):
    """Rows whose visible slots start late (left padding), skip a gap (a shared prefix, then the row's own
    slots) and end early (the cache's later slots are empty); S not a multiple of 16; large score ranges."""
    rng = np.random.default_rng(h)
    B, K, G, S = 4, 2, 3, 37
    q = jnp.asarray(3 * rng.standard_normal((B, K, G, h)), dtype)
    keys = jnp.asarray(3 * rng.standard_normal((B, S, K, h)), dtype)
    values = jnp.asarray(rng.standard_normal((B, S, K, h)), dtype)
    slots = np.arange(S)
    mask = np.stack([slots <= 36, (slots >= 5) & (slots <= 20), (slots < 4) | ((slots >= 9) & (slots <= 30)),
                     slots == 0])
    got = np.asarray(jax.jit(attention.decode_attention)(q, keys, values, jnp.asarray(mask)))
    ref = _reference(q, keys, values, mask)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


def test_row_without_visible_slots_gets_zeros_and_shapes_are_checked():
    q, keys, values = jnp.ones((1, 1, 2, 16)), jnp.ones((1, 8, 1, 16)), jnp.ones((1, 8, 1, 16))
    out = attention.decode_attention(q, keys, values, jnp.zeros((1, 8), bool))
    np.testing.assert_array_equal(np.asarray(out), 0)
    with pytest.raises(ValueError, match="shapes disagree"):
        attention.decode_attention(q, keys, values, jnp.ones((1, 9), bool))
    with pytest.raises(ValueError, match="of one dtype"):
        attention.decode_attention(q, keys.astype(jnp.bfloat16), values, jnp.ones((1, 8), bool))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_backend_runs_a_decode_step_on_the_kernel_and_agrees_with_the_reference(dtype):
    rng = np.random.default_rng(0)
    B, K, G, h, S = 3, 2, 4, 32, 24
    q = jnp.asarray(rng.standard_normal((B, 1, K * G, h)), dtype)
    k = jnp.asarray(rng.standard_normal((B, S, K, h)), dtype)
    v = jnp.asarray(rng.standard_normal((B, S, K, h)), dtype)
    vis = Visibility(query_slots=jnp.asarray([23]), start=jnp.asarray([13, 6, 0]), prefix=jnp.asarray([0, 3, 0]),
                     key_length=S)
    attend = jax.jit(CpuKernels().attend_cached)
    assert "QrrDecodeAttention" in attend.lower(q, k, v, vis).as_text()
    ours = np.asarray(attend(q, k, v, vis), np.float32)
    xla = np.asarray(jax.jit(XlaAttention().attend_cached)(q, k, v, vis), np.float32)
    np.testing.assert_allclose(ours, xla, atol=1e-5 if dtype == "float32" else 2e-2)
