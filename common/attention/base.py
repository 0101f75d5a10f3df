"""The protocol of an attention backend, and which key slots each query sees.

Layouts (B batch, T queries, S key slots, H query heads, K kv heads, G = H / K, h head dim):
  q [B, T, H, h]; keys and values [B, S, K, h] — the KV cache's own layout (`common.kv_cache`), the one the
  projections produce, `jax.nn.dot_product_attention` takes, and a paged cache splits into pages;
  out [B, T, H, h]. Query head k * G + g attends with kv head k.

The decoder calls `attend` without a cache (training: differentiated) and `attend_cached` under one (the
sampler's prefill and decode steps: never differentiated). A backend that runs a whole cached forward pass
its own way (the CPU kernels' one-call decoder layer) overrides the whole-step hooks: the sampler and the
rollout engine ask `uses_prepared` per call, keep `prepare`'s result per parameter version, and call
`cached_forward` (the engine: `paged_forward`) and `logits` instead of the decoder's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from common.attention.paged import paged_reference_attention


def attention_mask(query_slots: jax.Array, key_length: int, start: jax.Array, prefix=None) -> jax.Array:
    """query_slots [T] int, start [B], prefix [B] or None -> bool [B, T, S]: key slot s visible iff
    start[b] <= s <= slot(t), or s < prefix[b] (a prefix the row shares with others, prefilled once)."""
    keys = jnp.arange(key_length)[None, None, :]
    visible = (keys <= query_slots[None, :, None]) & (keys >= start[:, None, None])
    return visible if prefix is None else visible | (keys < prefix[:, None, None])


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Visibility:
    """Which of S key slots each query sees, as data a kernel can use without a dense mask: query t sits in
    slot query_slots[t]; row b's own tokens start at slot start[b]; slots below prefix[b] (None: none) hold a
    prefix every query of b sees. Causal: a query sees its own slot and those before it."""

    query_slots: jax.Array  # int32 [T]
    start: jax.Array  # int32 [B]
    prefix: jax.Array | None  # int32 [B] or None
    key_length: int = dataclasses.field(metadata=dict(static=True))  # S

    def mask(self) -> jax.Array:
        """bool [B, T, S] (`attention_mask`)."""
        return attention_mask(self.query_slots, self.key_length, self.start, self.prefix)


class AttentionBackend:
    """What the decoder and the sampler call for attention. Subclasses implement `attend` and may override
    the rest; defaults: cached attention as uncached, and no whole-step path. Instances are immutable and
    hashable (they sit in the decoder's static structure)."""

    name: ClassVar[str]
    # True: a decoder using this backend unrolls its layers (a Python loop, a KV cache per layer) instead of
    # scanning them, because the backend's own pass (`cached_forward`) works layer by layer.
    unrolled_layers: ClassVar[bool] = False

    # ---- attention ----------------------------------------------------------------------------------

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, visibility: Visibility) -> jax.Array:
        """Training attention (differentiated): q [B, T, H, h], k/v [B, S, K, h] -> [B, T, H, h] in q's dtype,
        softmax in float32."""
        raise NotImplementedError

    def attend_cached(self, q: jax.Array, k: jax.Array, v: jax.Array, visibility: Visibility) -> jax.Array:
        """Attention under a KV cache (prefill, decode step; never differentiated): as `attend`, over the
        cache's slots (or a prefill's fresh keys)."""
        return self.attend(q, k, v, visibility)

    def attend_paged(self, q: jax.Array, k_pool: jax.Array, v_pool: jax.Array, layer, view) -> jax.Array:
        """Attention under the engine's paged cache (`common.paged_kv`; prefill chunks and decode steps, never
        differentiated): q [B, T, H, h] of `layer`, whose keys and values are already in the pools [K, L, N,
        page, h]; view: the call's `PageView`. Default: the XLA gather of the listed pages
        (`common.attention.paged.paged_reference_attention`); a paged kernel overrides it."""
        return paged_reference_attention(q, k_pool, v_pool, layer, view)

    # ---- a whole cached forward pass (optional) -----------------------------------------------------

    def uses_prepared(self, rows: int, dtype) -> bool:
        """Whether a sampler call of `rows` rows in compute `dtype` runs `cached_forward` on `prepare`d data."""
        return False

    def prepare(self, model) -> Any:
        """Per-parameter-version data for `cached_forward` (packed weights, say), from the concrete decoder;
        None when it cannot be made (the backend has warned). Called outside jit."""
        raise NotImplementedError(f"the {self.name} backend prepares nothing")

    def cached_forward(self, model, prepared, tokens: jax.Array, cache, *, prefill: bool = False):
        """tokens [B, T] under `cache` -> (final hidden [B, T, d], the cache with the T slots written): the
        decoder's own `forward`, unless a backend runs the pass its own way on `prepared` (None: not)."""
        return model.forward(tokens, cache=cache, return_hidden=True, prefill=prefill)

    def paged_forward(self, model, prepared, tokens: jax.Array, kv, view):
        """tokens [B, T] under the engine's page pool `kv` (`common.paged_kv.PagedKV`) at `view` -> (final hidden
        [B, T, d], the pool with the T tokens' keys and values written): the decoder's own `forward_paged`, unless
        a backend runs the pass its own way on `prepared` (None: not)."""
        return model.forward_paged(tokens, kv, view)

    def logits(self, model, prepared, hidden: jax.Array) -> jax.Array:
        """hidden [..., d] -> float32 logits [..., V] under a cache."""
        return model.logits(hidden, sampling=True)

    # ---- where it runs ------------------------------------------------------------------------------

    @classmethod
    def for_mesh(cls, mesh) -> AttentionBackend:
        """The backend `select_backend` returns for `mesh` (None: one device): `cls()`, unless the backend
        keeps the mesh itself (a kernel it runs in shard_map)."""
        return cls()

    @classmethod
    def suits(cls, platform: str, mesh) -> bool:
        """Whether `select_backend("auto")` should pick this backend on `platform` ("cpu", "gpu", "tpu") with
        `mesh` (None: none)."""
        return False

    def check_mesh(self, mesh) -> None:
        """Raises ValueError when this backend cannot run under `mesh`."""

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self):
        return f"{type(self).__name__}()"
