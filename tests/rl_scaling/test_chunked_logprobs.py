"""Log-probs and entropies taken a chunk of positions at a time equal the full-logits reference, values and
gradients, and the compiled gradient never holds [B, R, V] float32 logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.model import product
from rl_scaling.grpo.chunked_logprobs import chunked_logprobs_and_entropy
from rl_scaling.grpo.logprobs import token_entropy, token_logprobs

B, D, V = 2, 16, 40


def _reference(hidden, head, tied, targets, temperature):
    logits = product(hidden, head, 1, False, transposed=tied, out_dtype=jnp.float32) / temperature
    return token_logprobs(logits, targets), token_entropy(logits)


def _inputs(R, tied, seed=0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(B, R, D)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(V, D) if tied else (D, V)) / np.sqrt(D), jnp.float32)
    targets = jnp.asarray(rng.integers(0, V, (B, R)), jnp.int32)
    weights = jnp.asarray(rng.normal(size=(2, B, R)), jnp.float32)
    return hidden, head, targets, weights


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("R, chunk, temperature", [(13, 4, 0.7), (16, 4, 1.0), (9, 1, 0.7), (7, 16, 0.7), (7, 0, 0.7)])
def test_chunked_equals_full_logits(tied, R, chunk, temperature):
    hidden, head, targets, weights = _inputs(R, tied)

    # Both sides compiled: op-by-op float32 differs from a compiled fusion by a few ulps of the entropy.
    def compiled(stats):
        def objective(h, w):
            logp, entropy = stats(h, w)
            return jnp.sum(weights[0] * logp + weights[1] * entropy)
        return jax.jit(stats), jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))

    chunked = compiled(lambda h, w: chunked_logprobs_and_entropy(h, w, tied, targets, temperature, chunk))
    full = compiled(lambda h, w: _reference(h, w, tied, targets, temperature))
    want = full[0](hidden, head)
    for g, w in zip(chunked[0](hidden, head), want):
        assert g.shape == (B, R) and g.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)
    (value, grads), (want_value, want_grads) = chunked[1](hidden, head), full[1](hidden, head)
    terms = float(sum(jnp.sum(jnp.abs(x * w)) for x, w in zip(weights, want)))  # a signed sum of these
    np.testing.assert_allclose(float(value), float(want_value), rtol=0, atol=1e-6 * terms)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6 * np.abs(w).max())


def test_rejects_mismatched_targets():
    hidden, head, targets, _ = _inputs(8, False)
    with pytest.raises(ValueError, match="targets"):
        chunked_logprobs_and_entropy(hidden, head, False, targets[:, :5], 1.0, 4)


def _compiled_gradient(B_, R, d, V_, chunk):
    def loss(hidden, head):
        logp, entropy = chunked_logprobs_and_entropy(hidden, head, False, jnp.zeros((B_, R), jnp.int32), 0.7, chunk)
        return jnp.sum(logp) + jnp.sum(entropy)

    args = (jax.ShapeDtypeStruct((B_, R, d), jnp.float32), jax.ShapeDtypeStruct((d, V_), jnp.float32))
    return jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile()


def test_gradient_never_holds_full_logits():
    """Compiled only (never run): 2 x 1024 positions over a 16,384-token vocabulary are 128 MiB of float32
    logits; in chunks of 64 positions the temporaries stay a few chunk-sized blocks (8 MiB each)."""
    B_, R, d, V_, chunk = 2, 1024, 64, 16384, 64
    full_logits = B_ * R * V_ * 4
    chunked = _compiled_gradient(B_, R, d, V_, chunk)
    unchunked = _compiled_gradient(B_, R, d, V_, 0)
    assert unchunked.memory_analysis().temp_size_in_bytes >= full_logits  # the test can tell the difference
    assert f"f32[{B_},{R},{V_}]" in unchunked.as_text()
    assert chunked.memory_analysis().temp_size_in_bytes < 6 * B_ * chunk * V_ * 4 < full_logits / 2
    assert f"f32[{B_},{R},{V_}]" not in chunked.as_text()
