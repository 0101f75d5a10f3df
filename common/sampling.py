"""Pure functions that turn next-token logits into a token: temperature, top-k, top-p, greedy.

Shapes: logits [B, V] float32. Which filters are active is static (part of the compile key); their
values (temperature, top_p) are traced, so changing them does not recompile.

Finite logits never give a NaN log-probability: logits are shifted by their row's maximum before the temperature
divides them, so no temperature can overflow them to inf (where inf - inf would be NaN). NaN logits (an
upstream failure: an id outside the embedding, a diverged model) give NaN log-probabilities, which
`check_logprobs_not_nan` refuses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingMode:
    """The static part of a sampling configuration."""

    greedy: bool
    top_k: int  # 0 = off
    use_top_p: bool

    @classmethod
    def from_params(cls, temperature: float, top_k: int, top_p: float) -> "SamplingMode":
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        return cls(greedy=temperature == 0.0, top_k=int(top_k), use_top_p=top_p < 1.0)


def top_p_mask(sorted_logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """sorted_logits [B, k] descending -> bool [B, k]: the smallest prefix whose probability mass reaches
    top_p (always at least one token)."""
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    return mass_before < top_p


def scaled_logits(logits: jax.Array, temperature: jax.Array) -> jax.Array:
    """(logits - row max) / temperature, [B, V]: at most 0, and 0 at the row's maximum, so softmax and
    log-softmax over it stay finite at any temperature (logits / 1e-38 would overflow to inf)."""
    return (logits - jnp.max(logits, axis=-1, keepdims=True)) / temperature


def truncated_logits(scaled: jax.Array, mode: SamplingMode, top_p: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """scaled [B, V] (`scaled_logits`) filtered to the candidates to sample from. Returns (candidate logits
    [B, k], candidate ids [B, k] or None when the candidates are the whole vocabulary)."""
    ids = None
    if mode.top_k:
        k = min(mode.top_k, scaled.shape[-1])
        scaled, ids = jax.lax.top_k(scaled, k)  # sorted descending
    if mode.use_top_p:
        if ids is None:
            order = jnp.argsort(-scaled, axis=-1)
            scaled, ids = jnp.take_along_axis(scaled, order, axis=-1), order
        scaled = jnp.where(top_p_mask(scaled, top_p), scaled, NEG_INF)
    return scaled, ids


def first_argmax(logits: jax.Array) -> jax.Array:
    """The index of the largest value over the last axis (the first one on a tie), as jnp.argmax, in two
    plain reductions: XLA:CPU's fused (value, index) reduction of jnp.argmax is ~4x slower, 3.5 ms a step
    for a [32, 49152] batch of logits."""
    best = jnp.max(logits, axis=-1, keepdims=True)
    iota = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    index = jnp.min(jnp.where(logits == best, iota, logits.shape[-1]), axis=-1)
    return jnp.minimum(index, logits.shape[-1] - 1)  # a row of NaNs has no maximum: give a valid id


def categorical(keys: jax.Array, logits: jax.Array) -> jax.Array:
    """keys [B] PRNG keys, logits [B, n] -> one index per row drawn from softmax(logits), by inverting the
    cumulative distribution at one uniform number per row: the first index whose cumulative probability passes
    u * total. jax.random.categorical draws n Gumbel numbers per row instead (n random words and two logarithms
    each): at [32, 49152] it took 20 ms a call on a 2-core CPU, this 4 ms. Indices of probability 0 (logits of
    NEG_INF after top-k / top-p) are never drawn."""
    probs = jax.nn.softmax(logits, axis=-1)
    cdf = jnp.cumsum(probs, axis=-1)
    u = jax.vmap(lambda key: jax.random.uniform(key, (), jnp.float32))(keys) * cdf[:, -1]
    iota = jax.lax.broadcasted_iota(jnp.int32, cdf.shape, cdf.ndim - 1)
    first = jnp.min(jnp.where(cdf > u[:, None], iota, cdf.shape[-1]), axis=-1)
    return jnp.minimum(first, cdf.shape[-1] - 1)  # u * total rounding onto the total itself: the last index


def sample_tokens(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array,
                  mode: SamplingMode) -> tuple[jax.Array, jax.Array]:
    """logits [B, V] float32, keys [B] PRNG keys -> (tokens [B] int32, logprobs [B] float32).

    The log-probability is that of the sampled token under softmax(logits / temperature) over the whole
    vocabulary (temperature 1 when greedy) — the policy's probability GRPO's importance ratio needs,
    before top-k / top-p truncation.
    """
    if mode.greedy:
        tokens = first_argmax(logits)
        logp = jax.nn.log_softmax(logits, axis=-1)
    else:
        scaled = scaled_logits(logits, temperature)
        candidates, ids = truncated_logits(scaled, mode, top_p)
        choice = categorical(keys, candidates)
        tokens = choice if ids is None else jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0]
        tokens = tokens.astype(jnp.int32)
        # log_softmax without its own max: the row's maximum of `scaled` is 0, so the sum is in [1, V]
        logp = scaled - jnp.log(jnp.sum(jnp.exp(scaled), axis=-1, keepdims=True))
    return tokens, jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]


def check_logprobs_not_nan(logprobs: Sequence[Sequence[float]]) -> None:
    """Raise FloatingPointError naming the sequences with a NaN log-probability (per sequence, those of its
    generated tokens). Finite logits never give one (`sample_tokens`): it means NaN or infinite logits upstream,
    whose tokens are meaningless."""
    bad = [i for i, row in enumerate(logprobs) if np.isnan(np.asarray(row, np.float64)).any()]
    if bad:
        raise FloatingPointError(
            f"sequence(s) {bad[:8]} of {len(logprobs)} got NaN log-probabilities: the model's logits were NaN or "
            f"infinite (an id outside the embedding? diverged parameters?)")
