"""Per-token log-probabilities and entropies from logits, without a one-hot of the vocabulary."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jnp.ndarray


def token_logprobs(logits: Array, targets: Array) -> Array:
    """log p(targets) under softmax(logits), ``[B, T]`` float32 nats.

    Args:
      logits: ``[B, T, V]`` (any float dtype; reduced in float32).
      targets: ``[B, T]`` integer token ids in ``[0, V)``; position t is scored by ``logits[:, t]``,
        so shift targets by one when the logits predict the next token.

    Gathers the target logit and subtracts the log-normaliser; neither a ``[B, T, V]`` one-hot nor a
    stored log-softmax is built (XLA fuses the float32 cast into the logsumexp reduction).
    """
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and targets [B, T]; got logits {logits.shape}, "
            f"targets {targets.shape}"
        )
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets must hold integer token ids, got dtype {targets.dtype}")
    logits = logits.astype(jnp.float32) if logits.dtype != jnp.float64 else logits
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return target_logits - jax.nn.logsumexp(logits, axis=-1)


def token_entropy(logits: Array) -> Array:
    """Entropy of softmax(logits) at every position, ``[B, T]`` float32 nats.

    H = logsumexp(l) - Σ_v softmax(l)_v · l_v, from ``logits`` ``[B, T, V]``.
    """
    if logits.ndim != 3:
        raise ValueError(f"expected logits [B, T, V], got shape {logits.shape}")
    logits = logits.astype(jnp.float32) if logits.dtype != jnp.float64 else logits
    log_norm = jax.nn.logsumexp(logits, axis=-1)
    probs = jnp.exp(logits - log_norm[..., None])
    # A logit of -inf (a masked token) has probability 0; keep 0 · -inf from becoming NaN.
    weighted = jnp.where(probs > 0, probs * logits, 0.0)
    return log_norm - jnp.sum(weighted, axis=-1)
