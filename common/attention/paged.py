"""Attention over a paged KV cache in plain XLA: the reference every paged kernel is tested against, and what
the CPU and GPU run. Each row's listed pages are gathered ([B, K, P * page, h]: only the P pages the call
lists, which the engine sizes to the longest live row, never the whole pool), then a causal softmax over them
in float32: query token t of row b sees the keys at positions <= positions[b, t].

Shapes: q [B, T, H, h], the pool [K, L, N, page, h] (`common.paged_kv`), out [B, T, H, h]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common.paged_kv import PageView, gather_pages


def paged_reference_attention(q: jax.Array, k_pool: jax.Array, v_pool: jax.Array, layer, view: PageView
                              ) -> jax.Array:
    """q [B, T, H, h] of `layer`, its keys and values already written to the pool -> [B, T, H, h] in q's
    dtype. Scores, softmax and the weighted sum in float32, rounded once (as
    every product of the sampler)."""
    B, T, H, h = q.shape
    dtype = q.dtype
    # float32 operands: the products of bfloat16 values are exact in float32, so this is the float32-accumulated
    # product (XLA:CPU has no bfloat16 x bfloat16 -> float32 batched dot)
    k = gather_pages(k_pool, layer, view.page_table).astype(jnp.float32)  # [B, K, S, h]
    v = gather_pages(v_pool, layer, view.page_table)
    K, S = k.shape[1], k.shape[2]
    q = q.astype(jnp.float32).reshape(B, T, K, H // K, h)
    scores = jnp.einsum("btkgh,bksh->bkgts", q, k) / jnp.sqrt(jnp.float32(h))
    visible = jnp.arange(S)[None, None, :] <= view.positions[:, :, None]  # [B, T, S]
    scores = jnp.where(visible[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).astype(jnp.float32)  # rounded as the cache's values
    out = jnp.einsum("bkgts,bksh->btkgh", probs, v.astype(jnp.float32))
    return out.astype(dtype).reshape(B, T, H, h)
