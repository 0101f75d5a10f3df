"""Our CPU decode attention (common/kernels/cpu_attention) against float64 numpy and against XLA's
attention in the decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.config import get_preset
from common.kernels import cpu_attention, cpu_build
from common.model import Decoder, KVCache, gqa_attention

pytestmark = pytest.mark.skipif(not cpu_build.available(), reason="no C++ compiler or CPU support: kernels off")


def _reference(q, keys, values, mask):
    q, keys, values = (np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in (q, keys, values))
    scores = np.einsum("bkgh,bkhs->bkgs", q, keys) / np.sqrt(q.shape[-1])
    scores = np.where(mask[:, None, None, :], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bkgs,bksh->bkgh", probs, values)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("h", [64, 20])  # whole 16-float vectors, and a remainder
def test_decode_attention_matches_numpy(dtype, h):
    """Rows whose visible slots start late (left padding), skip a gap (a shared prefix, then the row's own
    slots) and end early (the cache's later slots are empty); S not a multiple of 16; large score ranges."""
    rng = np.random.default_rng(h)
    B, K, G, S = 4, 2, 3, 37
    q = jnp.asarray(3 * rng.standard_normal((B, K, G, h)), dtype)
    keys = jnp.asarray(3 * rng.standard_normal((B, K, h, S)), dtype)
    values = jnp.asarray(rng.standard_normal((B, K, S, h)), dtype)
    slots = np.arange(S)
    mask = np.stack([slots <= 36, (slots >= 5) & (slots <= 20), (slots < 4) | ((slots >= 9) & (slots <= 30)),
                     slots == 0])
    got = np.asarray(jax.jit(cpu_attention.decode_attention)(q, keys, values, jnp.asarray(mask)))
    ref = _reference(q, keys, values, mask)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


def test_row_without_visible_slots_gets_zeros_and_shapes_are_checked():
    q, keys, values = jnp.ones((1, 1, 2, 16)), jnp.ones((1, 1, 16, 8)), jnp.ones((1, 1, 8, 16))
    out = cpu_attention.decode_attention(q, keys, values, jnp.zeros((1, 8), bool))
    np.testing.assert_array_equal(np.asarray(out), 0)
    with pytest.raises(ValueError, match="shapes disagree"):
        cpu_attention.decode_attention(q, keys, values, jnp.ones((1, 9), bool))
    with pytest.raises(ValueError, match="of one dtype"):
        cpu_attention.decode_attention(q, keys.astype(jnp.bfloat16), values, jnp.ones((1, 8), bool))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gqa_attention_uses_the_kernel_for_a_decode_step(dtype, monkeypatch):
    rng = np.random.default_rng(0)
    B, K, G, h, S = 3, 2, 4, 32, 24
    q = jnp.asarray(rng.standard_normal((B, 1, K * G, h)), dtype)
    k = jnp.asarray(rng.standard_normal((B, K, h, S)), dtype)
    v = jnp.asarray(rng.standard_normal((B, K, S, h)), dtype)
    mask = jnp.asarray(np.arange(S)[None, None, :] <= np.array([10, 17, 23])[:, None, None])
    attend = jax.jit(lambda *a: gqa_attention(*a, sampling=True))
    assert "QrrDecodeAttention" in attend.lower(q, k, v, mask).as_text()
    ours = np.asarray(attend(q, k, v, mask), np.float32)
    monkeypatch.setenv("QRR_CPU_KERNELS", "0")
    xla_attend = jax.jit(lambda *a: gqa_attention(*a, sampling=True))
    assert "QrrDecodeAttention" not in xla_attend.lower(q, k, v, mask).as_text()
    xla = np.asarray(xla_attend(q, k, v, mask), np.float32)
    np.testing.assert_allclose(ours, xla, atol=1e-5 if dtype == "float32" else 2e-2)


def test_decoder_decode_steps_agree_with_xla(monkeypatch):
    """Several greedy decode steps of the decoder over a left-padded batch: the same logits with and without
    the kernel (float32)."""
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(3))
    tokens = jnp.asarray([[0, 0, 5, 9, 2], [3, 8, 1, 4, 4]], jnp.int32)
    start = jnp.asarray([2, 0], jnp.int32)

    def run(tokens):
        cache = KVCache.zeros(model.config, 2, 12, model.dtype, start=start)
        logits, cache = model.forward(tokens, cache=cache)
        out = []
        for _ in range(4):
            token = jnp.argmax(logits[:, -1], -1)[:, None].astype(jnp.int32)
            logits, cache = model.forward(token, cache=cache)
            out.append(logits[:, -1])
        return jnp.stack(out, 1)

    ours = np.asarray(jax.jit(run)(tokens))
    monkeypatch.setenv("QRR_CPU_KERNELS", "0")
    xla = np.asarray(jax.jit(run)(tokens))
    np.testing.assert_allclose(ours, xla, atol=1e-5 * np.abs(xla).max())
