"""The decoder's static-size key/value cache: layout, where tokens sit in it, and which slots they see.

Layout: per layer, keys and values [B, S, K, h] (batch, slot, kv head, head dim) — the layout the k/v
projections produce, `jax.nn.dot_product_attention` and cuDNN take (BTNH), and a paged cache splits into
pages [pages, page, K, h]; writing one slot is a contiguous, in-place dynamic-update-slice. The layers'
arrays are one stacked [L, B, S, K, h] array per k and v for a decoder that scans its layers (the scan
carries it and writes layer i's slots in place), or a list of per-layer arrays for one that unrolls them.

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
STACKED_AXES = ("layers", *LAYER_AXES)  # of every layer's keys (or values), stacked


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """k, v: [L, B, S, K, h] stacked, or lists of L per-layer [B, S, K, h] arrays (`per_layer`). index: slots
    written so far (the same for every row: prompts are left-padded); start: [B] slot of each row's first
    token after its shared prefix; prefix: [B] length of the shared prefix in slots 0.. (0: none)."""

    k: jax.Array | list[jax.Array]
    v: jax.Array | list[jax.Array]
    index: jax.Array  # int32 scalar
    start: jax.Array  # int32 [B]
    prefix: jax.Array  # int32 [B]

    @property
    def per_layer(self) -> bool:
        """Whether k and v are lists of per-layer arrays (else one stacked array each)."""
        return isinstance(self.k, (list, tuple))

    @property
    def max_length(self) -> int:
        return self.k[0].shape[SLOT_AXIS]

    @classmethod
    def zeros(cls, config: ModelConfig, batch: int, max_length: int, dtype, start=None, prefix=None,
              stacked: bool = False) -> "KVCache":
        shape = (batch, max_length, config.num_kv_heads, config.head_dim)
        if stacked:
            zeros = lambda: constrain(jnp.zeros((config.num_layers, *shape), dtype), STACKED_AXES)
        else:
            zeros = lambda: [constrain(jnp.zeros(shape, dtype), LAYER_AXES) for _ in range(config.num_layers)]
        start = jnp.zeros((batch,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
        prefix = jnp.zeros((batch,), jnp.int32) if prefix is None else jnp.asarray(prefix, jnp.int32)
        return cls(k=zeros(), v=zeros(), index=jnp.zeros((), jnp.int32), start=start, prefix=prefix)

    def slots(self, lo: int, hi: int, rows=slice(None)) -> tuple:
        """Index of slots lo..hi-1 of `rows` in one of `stores`' arrays."""
        return slots(lo, hi, rows) if self.per_layer else (slice(None), *slots(lo, hi, rows))

    def stores(self) -> list[jax.Array]:
        """The arrays that hold keys and values: per layer, or the two stacked ones."""
        return [*self.k, *self.v] if self.per_layer else [self.k, self.v]

    def with_stores(self, arrays, **changes) -> "KVCache":
        """This cache holding `arrays` (as `stores` lists them) instead, with other fields `changes`d."""
        half = len(arrays) // 2
        k, v = (list(arrays[:half]), list(arrays[half:])) if self.per_layer else arrays
        return dataclasses.replace(self, k=k, v=v, **changes)

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


def write_slots(store: jax.Array, new: jax.Array, index, layer=None) -> jax.Array:
    """store with new [B, T, K, h] written at slots index..index+T-1, in the store's dtype, in place: store is
    a layer's [B, S, K, h] (layer None), or every layer's [L, B, S, K, h] and `layer` the one to write."""
    new = new.astype(store.dtype)
    if layer is None:
        return jax.lax.dynamic_update_slice(store, new, (0, index, 0, 0))
    return jax.lax.dynamic_update_slice(store, new[None], (layer, 0, index, 0, 0))


def layer_slots(store: jax.Array, layer=None) -> jax.Array:
    """A layer's keys or values [B, S, K, h] from `store` (as in `write_slots`)."""
    return store if layer is None else jax.lax.dynamic_index_in_dim(store, layer, 0, keepdims=False)


def slots(lo: int, hi: int, rows=slice(None)) -> tuple:
    """Index of slots lo..hi-1 of `rows` in a layer's keys or values."""
    return rows, slice(lo, hi)
