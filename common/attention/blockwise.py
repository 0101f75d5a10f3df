"""Blockwise attention in plain XLA (online softmax, flash-style): no [T, S] score array, forward or backward.

The queries are cut into blocks of `block_q` and the key slots into blocks of `block_k`; one (query block, key
block) tile of float32 scores [B, K, G, block_q, block_k] exists at a time. Which slots a tile sees comes from
the `Visibility` (query slots, start, prefix), never from a dense mask, and a tile no query of any row sees
(causal: above the diagonal; before every row's start) is skipped. The backward pass is flash attention's: it
keeps q, k, v, the output and the per-query log-sum-exp, and recomputes each tile's probabilities, so memory
grows as T + S, not T * S.

A query with no visible slot (a left-padding row) gets zeros and passes no gradient; the dense reference gives
it the mean of the values instead. The decoder never reads such a row.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from common.attention.base import AttentionBackend, Visibility

# Query tokens and key slots a tile: on CPU a 256 x 256 tile's scores stay in cache, and long sequences ran
# faster forward and backward than in 512 x 512 tiles.
BLOCK_Q = 256
BLOCK_K = 256


def blockwise_attention(q: jax.Array, k: jax.Array, v: jax.Array, visibility: Visibility,
                        block_q: int = BLOCK_Q, block_k: int = BLOCK_K) -> jax.Array:
    """q [B, T, H, h], k/v [B, S, K, h] -> [B, T, H, h] in v's dtype: softmax(q k^T / sqrt(h)) v over the slots
    `visibility` lets each query see, in tiles of block_q queries x block_k slots, softmax in float32."""
    B, T, H, h = q.shape
    S, K = k.shape[1], k.shape[2]
    bq, bk = min(block_q, T), min(block_k, S)
    prefix = jnp.zeros((B,), jnp.int32) if visibility.prefix is None else visibility.prefix.astype(jnp.int32)
    qs = jnp.pad(visibility.query_slots.astype(jnp.int32), (0, -T % bq), constant_values=-1)  # padding: sees nothing
    out = _flash(_tiles(q.reshape(B, T, K, H // K, h), bq), _tiles(k, bk), _tiles(v, bk), qs.reshape(-1, bq),
                 visibility.start.astype(jnp.int32), prefix, S)
    return _untile(out, T).reshape(B, T, H, h).astype(v.dtype)


def _tiles(x: jax.Array, block: int) -> jax.Array:
    """[B, L, *heads, h] -> [L / block, B, *heads, block, h], L padded with zeros to a multiple of block."""
    L = x.shape[1]
    x = jnp.pad(x, [(0, 0), (0, -L % block)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(x.shape[0], -1, block, *x.shape[2:])
    return jnp.moveaxis(x, 2, -2).swapaxes(0, 1)


def _untile(x: jax.Array, length: int) -> jax.Array:
    """The inverse of `_tiles`, cut back to `length`."""
    x = jnp.moveaxis(x.swapaxes(0, 1), -2, 2)
    return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :length]


# ---- one tile ------------------------------------------------------------------------------------------


def _tile_mask(qs, s0, bk, key_length, start, prefix):
    """Query slots qs [bq], key slots s0..s0+bk-1 -> bool [B, 1, 1, bq, bk] (`attention_mask` on the tile; slots
    past key_length are padding)."""
    keys = s0 + jnp.arange(bk, dtype=jnp.int32)
    causal = (keys[None, None, :] <= qs[None, :, None]) & (keys[None, None, :] >= start[:, None, None])
    visible = (causal | (keys[None, None, :] < prefix[:, None, None])) & (keys < key_length)[None, None, :]
    return visible[:, None, None]


def _tile_seen(qs, s0, bk, start, prefix):
    """Whether any query of the tile, in any row, sees any of slots s0..s0+bk-1 (else the tile is skipped)."""
    last_query = jnp.max(qs)
    own = (s0 <= last_query) & (start <= s0 + bk - 1) & (start <= last_query)
    return jnp.any(own | (s0 < prefix))


def _scores(qi, kj, mask, scale):
    """qi [B, K, G, bq, h], kj [B, K, bk, h] -> float32 scores [B, K, G, bq, bk], -inf where not visible."""
    s = jnp.einsum("bkgth,bksh->bkgts", qi, kj, preferred_element_type=jnp.float32) * scale
    return jnp.where(mask, s, -jnp.inf)


# ---- forward and backward --------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _flash(q, k, v, qs, start, prefix, key_length):
    """Tiled q [nq, B, K, G, bq, h], k/v [nk, B, K, bk, h], query slots qs [nq, bq] -> out, tiled like q."""
    return _forward(q, k, v, qs, start, prefix, key_length)[0]


def _forward(q, k, v, qs, start, prefix, key_length):
    """-> (out tiled like q in v's dtype, log-sum-exp [nq, B, K, G, bq] float32; 0 for a query that sees none)."""
    bk, h = k.shape[-2], k.shape[-1]
    scale = 1 / jnp.sqrt(jnp.float32(h))
    starts = jnp.arange(k.shape[0], dtype=jnp.int32) * bk

    def query_block(_, x):
        qi, qsi = x

        def key_block(carry, y):
            kj, vj, s0 = y

            def tile(carry):
                acc, m, l = carry
                s = _scores(qi, kj, _tile_mask(qsi, s0, bk, key_length, start, prefix), scale)
                m_new = jnp.maximum(m, s.max(-1))
                m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # no slot seen yet: keep exp finite
                p = jnp.exp(s - m_safe[..., None])
                correction = jnp.exp(m - m_safe)
                pv = jnp.einsum("bkgts,bksh->bkgth", p.astype(vj.dtype), vj, preferred_element_type=jnp.float32)
                return acc * correction[..., None] + pv, m_new, l * correction + p.sum(-1)

            return jax.lax.cond(_tile_seen(qsi, s0, bk, start, prefix), tile, lambda c: c, carry), None

        shape = qi.shape[:-1]
        init = (jnp.zeros(qi.shape, jnp.float32), jnp.full(shape, -jnp.inf), jnp.zeros(shape, jnp.float32))
        (acc, m, l), _ = jax.lax.scan(key_block, init, (k, v, starts))
        seen = l > 0
        out = acc / jnp.where(seen, l, 1.0)[..., None]
        lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
        return None, (out.astype(v.dtype), lse)

    _, (out, lse) = jax.lax.scan(query_block, None, (q, qs))
    return out, lse


def _flash_fwd(q, k, v, qs, start, prefix, key_length):
    out, lse = _forward(q, k, v, qs, start, prefix, key_length)
    return out, (q, k, v, qs, start, prefix, out, lse)


def _flash_bwd(key_length, residuals, dout):
    """Per key block, a pass over the query blocks: dk, dv accumulate in the inner carry, dq in the outer."""
    q, k, v, qs, start, prefix, out, lse = residuals
    bk, h = k.shape[-2], k.shape[-1]
    scale = 1 / jnp.sqrt(jnp.float32(h))
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), -1)  # [nq, B, K, G, bq]
    starts = jnp.arange(k.shape[0], dtype=jnp.int32) * bk

    def key_block(dq, y):
        kj, vj, s0 = y

        def query_block(carry, x):
            qi, qsi, doi, lsei, di = x

            def tile(carry):
                dk, dv = carry
                s = _scores(qi, kj, _tile_mask(qsi, s0, bk, key_length, start, prefix), scale)
                p = jnp.exp(s - lsei[..., None])  # -inf where not visible: 0
                dv = dv + jnp.einsum("bkgts,bkgth->bksh", p.astype(doi.dtype), doi, preferred_element_type=jnp.float32)
                dp = jnp.einsum("bkgth,bksh->bkgts", doi, vj, preferred_element_type=jnp.float32)
                ds = (p * (dp - di[..., None]) * scale).astype(qi.dtype)
                dk = dk + jnp.einsum("bkgts,bkgth->bksh", ds, qi, preferred_element_type=jnp.float32)
                return (dk, dv), jnp.einsum("bkgts,bksh->bkgth", ds, kj, preferred_element_type=jnp.float32)

            def skip(carry):
                return carry, jnp.zeros(qi.shape, jnp.float32)

            return jax.lax.cond(_tile_seen(qsi, s0, bk, start, prefix), tile, skip, carry)

        init = (jnp.zeros(kj.shape, jnp.float32), jnp.zeros(vj.shape, jnp.float32))
        (dk, dv), dqj = jax.lax.scan(query_block, init, (q, qs, dout, lse, delta))
        return dq + dqj, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros(q.shape, jnp.float32), (k, v, starts))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


class BlockwiseAttention(AttentionBackend):
    """`blockwise_attention` for training and under a cache, on any platform and mesh (GSPMD splits batch and
    heads as for the reference). block_q, block_k: tile sizes (query tokens, key slots)."""

    name = "blockwise"

    def __init__(self, block_q: int = BLOCK_Q, block_k: int = BLOCK_K):
        self.block_q, self.block_k = block_q, block_k

    def attend(self, q, k, v, visibility: Visibility):
        return blockwise_attention(q, k, v, visibility, self.block_q, self.block_k)

    def __repr__(self):
        return f"BlockwiseAttention(block_q={self.block_q}, block_k={self.block_k})"
