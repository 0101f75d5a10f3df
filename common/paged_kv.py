"""The paged KV cache on the device: a pool of fixed-size pages, and which pages and positions a call uses.

Layout: keys and values of every layer in one array each, [K, L, N, page, h] (kv head, layer, page, slot in
the page, head dim); kv heads first so a tensor-parallel shard holds whole heads. Reshaped (for free) to
[K, L * N, page, h] it is the page pool of the Pallas TPU paged-attention kernel
(`jax.experimental.pallas.ops.tpu.paged_attention`), with layer l's page p at l * N + p: a kernel reads a
layer's pages from the one pool by index, with no copy of the layer's slice (`layer_page_table`). Page 0
is the null page: nothing reads it as a sequence's key, and the rows and tokens of a call that are padding
write there (`NULL_PAGE`), so a fixed-shape program never needs a branch.

On a mesh whose batch is split S ways the engine keeps one pool per batch shard: the page axis is split over the
batch axes (PAGE_AXES: "batch" on the page axis; with one shard it splits nothing), each shard's pages numbered
from 0 with its own null page, and the engine's program runs in `shard_map` over those axes, so a row reads and
writes only its own shard's pages (nothing is gathered across chips) and each chip holds 1 / S of the pages.

Which page holds what is the host's business (`common.engine.pages`): a call gets a `PageView` — per row the
page table (its pages in order), the RoPE position of each query token, and the row's length after the call
(keys at positions < length are valid; a query token at a position >= length is padding). Token at position
p of a row sits in page `page_table[b, p // page]`, slot `p % page`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from common.config import ModelConfig
from common.sharding import constrain

NULL_PAGE = 0  # written by padding, read by nothing
LANES = 128  # a TPU vector register's lanes: the head dims whose pool rows tile without padding
# logical axes of the stacked page pool: whole kv heads a tensor shard, the pages split over the batch shards
# (each shard its own pages: `common.engine`'s per-shard pools; S x a shard's pages always divides by S)
PAGE_AXES = ("act_kv_heads", "layers", "batch", None, None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class PagedKV:
    """k, v: [K, L, N, page, h] in the compute dtype (N pages a layer, page 0 the null page)."""

    k: jax.Array
    v: jax.Array

    @property
    def page_size(self) -> int:
        return self.k.shape[3]

    @property
    def num_pages(self) -> int:
        """Pages a layer (the null page included)."""
        return self.k.shape[2]

    @classmethod
    def zeros(cls, config: ModelConfig, num_pages: int, page_size: int, dtype) -> "PagedKV":
        """num_pages: every batch shard's pages together (split over the shards as PAGE_AXES says)."""
        shape = (config.num_kv_heads, config.num_layers, num_pages, page_size, config.head_dim)
        return cls(k=constrain(jnp.zeros(shape, dtype), PAGE_AXES), v=constrain(jnp.zeros(shape, dtype), PAGE_AXES))


def pool_bytes(config: ModelConfig, num_pages: int, page_size: int, dtype) -> int:
    """Bytes of a page pool (keys and values, every layer)."""
    return 2 * config.num_layers * config.num_kv_heads * num_pages * page_size * config.head_dim * \
        jnp.dtype(dtype).itemsize


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class PageView:
    """The pages and positions of one call: page_table [B, P] int32 (a row's pages in order; unused entries
    NULL_PAGE), positions [B, T] int32 (each query token's position in its row), lengths [B] int32 (the row's
    length once the call's tokens are written: its valid keys; 0 for a padding row)."""

    page_table: jax.Array
    positions: jax.Array
    lengths: jax.Array

    def valid(self) -> jax.Array:
        """bool [B, T]: which query tokens are real (the rest are padding)."""
        return self.positions < self.lengths[:, None]

    def write_index(self, page_size: int) -> tuple[jax.Array, jax.Array]:
        """(page [B, T], slot in the page [B, T]) each query token's key and value go to; padding -> the null
        page's slot 0."""
        valid = self.valid()
        page_of = jnp.take_along_axis(self.page_table, jnp.clip(self.positions // page_size, 0,
                                                                  self.page_table.shape[1] - 1), axis=1)
        return (jnp.where(valid, page_of, NULL_PAGE).astype(jnp.int32),
                jnp.where(valid, self.positions % page_size, 0).astype(jnp.int32))


@dataclasses.dataclass(frozen=True)
class PagedLayer:
    """What a decoder layer gets as its cache in the engine's pass (`common.model.Attention`): the pools k, v
    [K, L, N, page, h], this layer's index in them, and the call's `PageView`."""

    k: jax.Array
    v: jax.Array
    layer: jax.Array | int
    view: PageView


def write_pages(store: jax.Array, new: jax.Array, layer, view: PageView) -> jax.Array:
    """store [K, L, N, page, h] with new [B, T, K, h] (one layer's fresh keys or values) written at the view's
    positions of `layer`, in the store's dtype; padding tokens land in the null page."""
    page, slot = view.write_index(store.shape[3])
    K, h = store.shape[0], store.shape[-1]
    new = jnp.moveaxis(new.astype(store.dtype), 2, 0)  # [K, B, T, h]
    if h % LANES:  # the kv heads in the window (see below)
        layers = jnp.full_like(page, layer)  # adjacent index arrays: their axes [B, T] take their place, after K
        return store.at[:, layers, page, slot].set(new, mode="drop")
    # every index but the head dim given (kv head too): the scatter's window is one head vector, so the compiler
    # keeps the pool's own layout in the layer loop. With the kv heads in the window, TPU lays the pool out
    # kv-head-minor inside the loop and copies it in, out and after every write (two pool-sized temporaries);
    # for a head dim below a lane width (64: Qwen2.5-0.5B, SmolLM2) that form is the better one, as the other pads
    # the pool's rows to 128 lanes inside the loop (six pool-sized temporaries, measured on v5e-16).
    heads = jnp.arange(K, dtype=jnp.int32)[:, None, None]
    index = lambda a: jnp.broadcast_to(a[None], (K, *a.shape))
    layers = jnp.full((K, *page.shape), layer, jnp.int32)
    return store.at[heads, layers, index(page), index(slot)].set(new, mode="drop")


def gather_pages(store: jax.Array, layer, page_table: jax.Array) -> jax.Array:
    """A layer's keys or values of the listed pages, [B, K, P * page, h] (position-ordered per row)."""
    pages = store[:, jnp.full_like(page_table, layer), page_table]  # [K, B, P, page, h]
    K, B, P, page, h = pages.shape
    return jnp.moveaxis(pages, 0, 1).reshape(B, K, P * page, h)


def layer_page_table(page_table: jax.Array, layer, pages_per_layer: int) -> jax.Array:
    """A layer's page table in the flattened pool [K, L * N, page, h] (`flat_pool`)."""
    return page_table + layer * pages_per_layer


def flat_pool(store: jax.Array) -> jax.Array:
    """store [K, L, N, page, h] -> [K, L * N, page, h] (a reshape of adjacent axes: no copy)."""
    K, L, N, page, h = store.shape
    return store.reshape(K, L * N, page, h)
