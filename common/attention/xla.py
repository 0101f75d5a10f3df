"""The plain JAX attention: `reference_attention`, dense scores under a boolean mask with softmax in float32,
is the oracle every backend is tested against; `XlaAttention` runs it for short lengths and the blockwise
(online-softmax) form above a size, on every platform and under any mesh (GSPMD splits batch and heads)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common.attention.base import AttentionBackend, Visibility
from common.attention.blockwise import BLOCK_K, BLOCK_Q, blockwise_attention

# Queries x key slots above which `XlaAttention` goes blockwise: below it the dense scores are small and the dense
# product about as fast on CPU; above it the blockwise form is faster there and its memory grows as T + S.
BLOCKWISE_ABOVE = 512 * 512


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                        accumulate_f32: bool = False) -> jax.Array:
    """q [B, T, H, h], k/v [B, S, K, h], mask bool [B, T, S] -> [B, T, H, h] in v's dtype. The scores are
    float32, softmax in float32; accumulate_f32: the weighted sum of values too (else in v's dtype, whose
    transpose stays in it when differentiated). A query with no visible slot gets the mean of the values
    (uniform weights), as any masked softmax with a finite fill; the decoder never asks for one."""
    B, T, H, h = q.shape
    K = k.shape[2]
    q = q.reshape(B, T, K, H // K, h)
    scores = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(h))
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v, preferred_element_type=jnp.float32 if accumulate_f32 else None)
    return out.astype(v.dtype).reshape(B, T, H, h)


class XlaAttention(AttentionBackend):
    """Plain XLA attention: `reference_attention` while T * S <= blockwise_above (and for every decode step,
    T = 1, whose scores are [B, H, 1, S]), else `blockwise_attention` in block_q x block_k tiles, which never
    holds [T, S] scores. Under a cache the dense weighted sum accumulates in float32 and rounds once, as
    every product of the sampler does (the blockwise one always does)."""

    name = "xla"
    # Class defaults, so that subclasses with their own __init__ (the cpu plugin) have them.
    blockwise_above, block_q, block_k = BLOCKWISE_ABOVE, BLOCK_Q, BLOCK_K

    def __init__(self, blockwise_above: int = BLOCKWISE_ABOVE, block_q: int = BLOCK_Q, block_k: int = BLOCK_K):
        self.blockwise_above, self.block_q, self.block_k = blockwise_above, block_q, block_k

    def _blockwise(self, q, k) -> bool:
        return q.shape[1] > 1 and q.shape[1] * k.shape[1] > self.blockwise_above

    def attend(self, q, k, v, visibility: Visibility):
        if self._blockwise(q, k):
            return blockwise_attention(q, k, v, visibility, self.block_q, self.block_k)
        return reference_attention(q, k, v, visibility.mask())

    def attend_cached(self, q, k, v, visibility: Visibility):
        if self._blockwise(q, k):
            return blockwise_attention(q, k, v, visibility, self.block_q, self.block_k)
        return reference_attention(q, k, v, visibility.mask(), accumulate_f32=True)
