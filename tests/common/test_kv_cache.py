"""The KV cache (common/kv_cache): its layout, where new tokens go and what they see, and writes in place."""

import jax
import jax.numpy as jnp
import numpy as np

from common.config import get_preset
from common.kv_cache import SLOT_AXIS, KVCache, layer_slots, slots, write_slots


def test_layout_is_batch_slot_kv_head_head_dim():
    cfg = get_preset("tiny")
    cache = KVCache.zeros(cfg, batch=3, max_length=20, dtype=jnp.bfloat16)
    assert cache.per_layer and len(cache.k) == len(cache.v) == cfg.num_layers
    assert cache.k[0].shape == cache.v[0].shape == (3, 20, cfg.num_kv_heads, cfg.head_dim)
    assert cache.k[0].dtype == jnp.bfloat16 and cache.max_length == 20 and SLOT_AXIS == 1
    stacked = KVCache.zeros(cfg, batch=3, max_length=20, dtype=jnp.bfloat16, stacked=True)
    assert not stacked.per_layer and stacked.max_length == 20
    assert stacked.k.shape == stacked.v.shape == (cfg.num_layers, 3, 20, cfg.num_kv_heads, cfg.head_dim)


def test_placement_positions_count_from_each_rows_start_after_its_prefix():
    cfg = get_preset("tiny")
    cache = KVCache.zeros(cfg, 2, 12, jnp.float32, start=[3, 6], prefix=[0, 4])
    cache.index = jnp.int32(8)
    positions, vis = cache.placement(2)
    np.testing.assert_array_equal(np.asarray(positions), [[5, 6], [6, 7]])  # row 1: 4 prefix + (8 - 6)
    np.testing.assert_array_equal(np.asarray(vis.query_slots), [8, 9])
    assert vis.key_length == 12
    _, fresh = KVCache.zeros(cfg, 2, 12, jnp.float32).placement(5, prefill=True)
    assert fresh.key_length == 5  # a prefill of an empty cache attends to its own slots only


def test_write_slots_writes_those_slots_in_place():
    cache = jnp.zeros((2, 64, 2, 16), jnp.bfloat16)
    new = jnp.ones((2, 3, 2, 16), jnp.float32)
    out = write_slots(cache, new, 5)
    assert out.dtype == jnp.bfloat16
    written = np.zeros((2, 64, 2, 16), bool)
    written[slots(5, 8)] = True
    np.testing.assert_array_equal(np.asarray(out, np.float32), written)
    compiled = jax.jit(lambda c, n: write_slots(c, n, 7), donate_argnums=0).lower(cache, new).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < cache.nbytes // 4  # no second copy of the cache


def test_write_slots_into_one_layer_of_a_stacked_cache_in_place():
    stacked = jnp.zeros((3, 2, 64, 2, 16), jnp.bfloat16)
    new = jnp.ones((2, 3, 2, 16), jnp.float32)
    out = write_slots(stacked, new, 5, jnp.int32(1))
    written = np.zeros(stacked.shape, bool)
    written[1][slots(5, 8)] = True
    np.testing.assert_array_equal(np.asarray(out, np.float32), written)
    np.testing.assert_array_equal(np.asarray(layer_slots(out, jnp.int32(1)), np.float32), written[1])
    compiled = jax.jit(lambda c, n, i: write_slots(c, n, 7, i), donate_argnums=0).lower(stacked, new, 2).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < stacked.nbytes // 4
