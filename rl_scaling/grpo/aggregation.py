"""Reductions of a per-token loss ``[B, T]`` to the scalar that is differentiated.

``mask`` ``[B, T]`` is 1 on response tokens that count and 0 elsewhere (prompt, padding, and any
completion the caller chose to drop, e.g. truncated ones). A sequence with no counted token is left
out of every mean and never produces NaN; if no token counts at all the loss is 0. Uncounted slots are
selected away (``where``), not multiplied by 0, so a NaN or inf there never reaches the sum or its gradient.

- ``token-mean``: sum over all counted tokens / number of counted tokens in the mini-batch. Long
  responses weigh more (the RL scaling study, DAPO).
- ``seq-mean-token-mean``: mean over the tokens of each sequence, then mean over sequences (the
  original GRPO). Every sequence weighs the same, so per-token weight falls with length.
- ``seq-mean-token-sum-norm``: sum over the tokens of each sequence / a constant (the maximum
  response length), then mean over sequences (Dr. GRPO). Removes GRPO's length bias.

The denominators are those of the arrays passed in: when a mini-batch is split into micro-batches
for gradient accumulation, aggregate the whole mini-batch (or rescale) to keep these definitions.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax.numpy as jnp

Array = jnp.ndarray


def _check(loss_tok: Array, mask: Array) -> None:
    if loss_tok.ndim != 2 or loss_tok.shape != mask.shape:
        raise ValueError(
            f"loss_tok and mask must both be [B, T]; got loss_tok {loss_tok.shape}, mask {mask.shape}"
        )


def _counted_terms(loss_tok: Array, mask: Array) -> Array:
    """loss·mask where mask > 0 and exactly 0 elsewhere, ``[B, T]`` (0 · inf would be NaN)."""
    return jnp.where(mask > 0, loss_tok * mask, jnp.zeros((), loss_tok.dtype))


def _counted_sequences(mask: Array) -> Array:
    """Number of sequences with at least one counted token (scalar float, >= 1 to avoid 0/0)."""
    has_tokens = (jnp.sum(mask, axis=1) > 0).astype(jnp.float32)
    return jnp.maximum(jnp.sum(has_tokens), 1.0)


def token_mean(loss_tok: Array, mask: Array, max_response_len: Optional[int] = None) -> Array:
    """Σ_bt loss·mask / Σ_bt mask, a scalar. ``max_response_len`` is unused."""
    _check(loss_tok, mask)
    mask = mask.astype(loss_tok.dtype)
    return jnp.sum(_counted_terms(loss_tok, mask)) / jnp.maximum(jnp.sum(mask), 1.0)


def seq_mean_token_mean(loss_tok: Array, mask: Array, max_response_len: Optional[int] = None) -> Array:
    """mean over non-empty sequences of (Σ_t loss·mask / Σ_t mask), a scalar."""
    _check(loss_tok, mask)
    mask = mask.astype(loss_tok.dtype)
    per_seq = jnp.sum(_counted_terms(loss_tok, mask), axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    return jnp.sum(per_seq) / _counted_sequences(mask)


def seq_mean_token_sum_norm(
    loss_tok: Array, mask: Array, max_response_len: Optional[int] = None
) -> Array:
    """mean over non-empty sequences of (Σ_t loss·mask / max_response_len), a scalar.

    ``max_response_len`` (tokens) defaults to T, the padded response width of ``loss_tok``; pass
    the configured maximum so the normaliser is the same constant for every batch.
    """
    _check(loss_tok, mask)
    norm = loss_tok.shape[1] if max_response_len is None else max_response_len
    if norm <= 0:
        raise ValueError(f"max_response_len must be positive, got {max_response_len}")
    mask = mask.astype(loss_tok.dtype)
    per_seq = jnp.sum(_counted_terms(loss_tok, mask), axis=1) / norm
    return jnp.sum(per_seq) / _counted_sequences(mask)


AggregationFn = Callable[..., Array]

LOSS_AGGREGATIONS: dict[str, AggregationFn] = {
    "token-mean": token_mean,
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
}


def get_loss_aggregation(name: str) -> AggregationFn:
    """Returns ``fn(loss_tok [B,T], mask [B,T], max_response_len=None) -> scalar`` for ``name``."""
    try:
        return LOSS_AGGREGATIONS[name]
    except KeyError:
        raise KeyError(
            f"unknown loss aggregation {name!r}; known: {sorted(LOSS_AGGREGATIONS)}"
        ) from None
