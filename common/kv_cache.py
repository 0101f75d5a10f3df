"""The decoder's static-size key/value cache: layout, where tokens sit in it, and which slots they see.

Layout: per layer, keys and values [B, S, K, h] (batch, slot, kv head, head dim) — the layout the k/v
projections produce, `jax.nn.dot_product_attention` and cuDNN take (BTNH), and a paged cache splits into
pages [pages, page, K, h]; writing one slot is a contiguous, in-place dynamic-update-slice.

Sequences may be left-padded: `start[b]` is the slot of row b's first own token. The token in slot s has
RoPE position s - start[b] and attends to slots start[b] <= s' <= s. A cache may also hold a prefix that
the sampler prefilled once for several rows: slots 0..prefix[b]-1 of row b, seen by every query of b; b's
own tokens then start at slot start[b], with positions prefix[b] + s - start[b].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from common.attention.base import Visibility
from common.config import ModelConfig
from common.sharding import constrain

SLOT_AXIS = 1  # the slot axis of a layer's keys and values
LAYER_AXES = ("batch", "cache_length", "act_kv_heads", None)  # logical axes of a layer's keys and values


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """k[i], v[i]: [B, S, K, h] for layer i. index: slots written so far (the same for every row: prompts
    are left-padded); start: [B] slot of each row's first token after its shared prefix; prefix: [B] length
    of the shared prefix in slots 0.. (0: none)."""

    k: list[jax.Array]
    v: list[jax.Array]
    index: jax.Array  # int32 scalar
    start: jax.Array  # int32 [B]
    prefix: jax.Array  # int32 [B]

    @property
    def max_length(self) -> int:
        return self.k[0].shape[SLOT_AXIS]

    @classmethod
    def zeros(cls, config: ModelConfig, batch: int, max_length: int, dtype, start=None, prefix=None) -> "KVCache":
        shape = (batch, max_length, config.num_kv_heads, config.head_dim)
        zeros = lambda: constrain(jnp.zeros(shape, dtype), LAYER_AXES)
        start = jnp.zeros((batch,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
        prefix = jnp.zeros((batch,), jnp.int32) if prefix is None else jnp.asarray(prefix, jnp.int32)
        return cls(k=[zeros() for _ in range(config.num_layers)], v=[zeros() for _ in range(config.num_layers)],
                   index=jnp.zeros((), jnp.int32), start=start, prefix=prefix)

    def placement(self, length: int, prefill: bool = False) -> tuple[jax.Array, Visibility]:
        """Where `length` new tokens go: (RoPE positions [B, T] int32, their `Visibility` over the cache, or over
        the T new slots only when prefill: an empty cache, no prefix)."""
        return token_placement(self.index, length, self.start, self.prefix,
                               length if prefill else self.max_length)


def token_placement(index, length: int, start: jax.Array, prefix: jax.Array | None, key_length: int
                    ) -> tuple[jax.Array, Visibility]:
    """Tokens in slots index..index+length-1 of rows starting at `start` [B] (after `prefix` [B] or None) ->
    (positions [B, T] int32, Visibility over `key_length` slots)."""
    slots = index + jnp.arange(length, dtype=jnp.int32)
    positions = jnp.maximum(slots[None, :] - start[:, None], 0)
    if prefix is not None:
        positions = positions + prefix[:, None]
    return positions, Visibility(query_slots=slots, start=start, prefix=prefix, key_length=key_length)


def write_slots(layer_cache: jax.Array, new: jax.Array, index) -> jax.Array:
    """layer_cache [B, S, K, h] with new [B, T, K, h] written at slots index..index+T-1, in the cache's dtype."""
    return jax.lax.dynamic_update_slice(layer_cache, new.astype(layer_cache.dtype), (0, index, 0, 0))


def slots(lo: int, hi: int, rows=slice(None)) -> tuple:
    """Index of slots lo..hi-1 of `rows` in a layer's keys or values."""
    return rows, slice(lo, hi)
