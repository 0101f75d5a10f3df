"""Per-token log-probs and entropies straight from final hidden states, a chunk of positions at a time.

The output head turns ``[B, R, d]`` hidden states into ``[B, R, V]`` float32 logits: for Qwen2.5
(V = 151,936) and R = 4096 response tokens that is 2.5 GB per sequence, and the backward pass of a
plain log-softmax keeps it alive. Here the positions go through the head ``chunk`` at a time inside a
``lax.map`` whose body is under ``jax.checkpoint``: the forward keeps only each chunk's inputs (slices
of the hidden states) and the backward recomputes one chunk's logits at a time, so no array of
``[B, R, V]`` exists in either pass. The results equal ``token_logprobs`` / ``token_entropy`` on the
full logits (the same products per row, in the same dtype).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common.model import product
from common.sharding import constrain
from rl_scaling.grpo.logprobs import token_entropy, token_logprobs

Array = jnp.ndarray
# Response positions whose logits [n, chunk, V] are alive at once (grpo.logprob_chunk; 0 = all R at once).
DEFAULT_LOGPROB_CHUNK = 512


def head_logprobs_and_entropy(hidden: Array, head: Array, tied: bool, targets: Array,
                              temperature: float) -> tuple[Array, Array]:
    """(logp [B, T], entropy [B, T]) under softmax(hidden · head / temperature), all positions at once.

    Args:
      hidden: ``[B, T, d]`` final hidden states (compute dtype).
      head: the output head from ``Decoder.head()``: ``[V, d]`` when ``tied`` (the embedding), else ``[d, V]``.
      targets: ``[B, T]`` token ids scored at each position.
      temperature: the sampling temperature the log-probs are taken at.

    Builds the whole ``[B, T, V]`` float32 logits: the reference, and the body of one chunk.
    """
    logits = product(hidden, head, 1, False, transposed=tied, out_dtype=jnp.float32)
    logits = constrain(logits, ("batch", "length", "act_vocab")) / temperature
    return token_logprobs(logits, targets), token_entropy(logits)


def _split_positions(x: Array, chunk: int) -> Array:
    """[B, T, ...] -> [ceil(T / chunk), B, chunk, ...], the tail chunk padded with zeros."""
    B, T = x.shape[:2]
    n = -(-T // chunk)
    pad = [(0, 0), (0, n * chunk - T)] + [(0, 0)] * (x.ndim - 2)
    x = jnp.pad(x, pad).reshape(B, n, chunk, *x.shape[2:])
    return jnp.moveaxis(x, 1, 0)


def _join_positions(x: Array, length: int) -> Array:
    """[n, B, chunk] -> [B, length]: the inverse of ``_split_positions`` (padding dropped)."""
    n, B, chunk = x.shape
    return jnp.moveaxis(x, 0, 1).reshape(B, n * chunk)[:, :length]


def chunked_logprobs_and_entropy(hidden: Array, head: Array, tied: bool, targets: Array,
                                 temperature: float, chunk: int) -> tuple[Array, Array]:
    """``head_logprobs_and_entropy`` ``chunk`` positions at a time: (logp [B, R], entropy [B, R]) float32.

    ``chunk`` (positions per chunk, for the whole batch): the largest float32 logits block alive is
    ``[B, chunk, V]``, in the forward and the backward pass alike. ``chunk <= 0`` or ``chunk >= R`` is
    one block of all positions, without recomputation. R need not be a multiple of ``chunk``: the tail
    chunk is padded with zeros and the padded positions are dropped (they get no gradient).
    """
    if hidden.ndim != 3 or targets.shape != hidden.shape[:2]:
        raise ValueError(f"expected hidden [B, R, d] and targets [B, R]; got hidden {hidden.shape}, "
                         f"targets {targets.shape}")
    R = targets.shape[1]
    if chunk <= 0 or chunk >= R:
        return head_logprobs_and_entropy(hidden, head, tied, targets, temperature)

    @jax.checkpoint
    def one_chunk(inputs):
        h, t = inputs
        return head_logprobs_and_entropy(h, head, tied, t, temperature)

    logp, entropy = jax.lax.map(one_chunk, (_split_positions(hidden, chunk), _split_positions(targets, chunk)))
    return _join_positions(logp, R), _join_positions(entropy, R)
