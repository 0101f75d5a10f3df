"""The plain JAX reference of attention: dense scores under a boolean mask, softmax in float32. It runs on
every platform and under any mesh (GSPMD splits batch and heads), and every other backend is tested
against it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common.attention.base import AttentionBackend, Visibility


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
    """The reference backend (`reference_attention`). Under a cache the weighted sum accumulates in float32
    and rounds once, as every product of the sampler does."""

    name = "xla"

    def attend(self, q, k, v, visibility: Visibility):
        return reference_attention(q, k, v, visibility.mask())

    def attend_cached(self, q, k, v, visibility: Visibility):
        return reference_attention(q, k, v, visibility.mask(), accumulate_f32=True)
