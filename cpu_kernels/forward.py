"""The decoder's forward pass under a KV cache, on weights packed for the CPU kernels.

The same layer as `common.model.Block`, composed from `common.model`'s public pure functions (`rms_norm`,
`rope_cos_sin`, `apply_rope`, `swiglu`) and the cache's (`common.kv_cache`), with every weight product on
packed panels (`cpu_kernels.products`) and, for a decode step, the whole layer as one kernel call
(`cpu_kernels.layer`). It rounds where the decoder does, and the parity tests hold it to the decoder
(cpu_kernels/tests/test_backend.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from common.kv_cache import KVCache, write_slots
from common.model import apply_rope, rms_norm, rope_cos_sin, swiglu
from common.paged_kv import PagedKV, PageView, write_pages
from cpu_kernels import embedding, layer, products


def pack_weights(model) -> dict:
    """Every weight of a forward pass in the compute dtype, packed (`products.pack`):
    {"layers": [{"qkv", "o", "gate_up", "down"}...], "head"}."""
    def packed(param, contract=1):  # the kernel as the 2-D [contracted, out] matrix it is in a product
        w = param[...].astype(model.dtype)
        return products.pack(w.reshape(math.prod(w.shape[:contract]), -1))

    blocks = [model.block(i) for i in range(model.config.num_layers)]
    layers = [{"qkv": packed(b.attn.qkv_kernel), "o": packed(b.attn.o_kernel, 2),
               "gate_up": packed(b.mlp.gate_up_kernel), "down": packed(b.mlp.down_kernel)} for b in blocks]
    head, tied = model.head()
    return {"layers": layers, "head": products.pack(head, transposed=tied)}


def packed_product(x: jax.Array, panels: jax.Array, contract: int, out_shape: tuple[int, ...], dtype) -> jax.Array:
    """x [..., c...] (its last `contract` axes) . the packed weight -> [..., *out_shape] in `dtype`, accumulated
    in float32 and rounded once (as `common.model.product` when sampling)."""
    lead = x.shape[:x.ndim - contract]
    out = products.packed_matmul(x.reshape(math.prod(lead), -1), panels, math.prod(out_shape))
    return out.reshape(*lead, *out_shape).astype(dtype)


def head_logits(model, packed: dict, hidden: jax.Array) -> jax.Array:
    """hidden [..., d] -> float32 logits [..., V] on the packed head."""
    return packed_product(hidden, packed["head"], 1, (model.config.vocab_size,), jnp.float32)


def cached_forward(model, packed: dict, tokens: jax.Array, cache: KVCache, *, prefill: bool, attend_cached,
                   layer_kernel: bool) -> tuple[jax.Array, KVCache]:
    """tokens [B, T] under `cache` -> (final hidden [B, T, d], the cache with the T slots written), as
    `model.forward(tokens, cache=cache, return_hidden=True, prefill=prefill)`. attend_cached: the backend's
    attention under a cache; layer_kernel: a decode step's layers as one kernel call each (where the kernel
    takes the dtype and head size)."""
    cfg, dtype = model.config, model.dtype
    B, T = tokens.shape
    positions, visibility = cache.placement(T, prefill)
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
    x = embedding.take_rows(model.embedding[...], tokens).astype(dtype)
    one_call = layer_kernel and T == 1 and not prefill and layer_kernel_takes(model, cache.k[0].dtype)
    mask = visibility.mask()[:, 0] if one_call else None
    new_k, new_v = [], []
    if not cache.per_layer:
        raise ValueError("the cpu backend's pass takes a per-layer cache (a decoder with scan_layers=False)")
    for i in range(cfg.num_layers):
        block, weights = model.block(i), packed["layers"][i]
        if one_call:
            out, k, v = layer.decode_layer(
                x[:, 0], block.attn_norm[...], _qkv_bias(block), block.mlp_norm[...], weights, cos[:, 0], sin[:, 0],
                cache.k[i], cache.v[i], cache.index, mask, eps=block.eps, intermediate=cfg.intermediate_size)
            x = out[:, None]
        else:
            def attend(q, k, v, stores=(cache.k[i], cache.v[i])):  # the new slots written, then attention
                stores = write_slots(stores[0], k, cache.index), write_slots(stores[1], v, cache.index)
                if not prefill:
                    k, v = stores
                return attend_cached(q, k.astype(dtype), v.astype(dtype), visibility), stores

            x, (k, v) = _layer(block, weights, x, cos, sin, dtype, attend)
        new_k.append(k)
        new_v.append(v)
    x = rms_norm(x, model.final_norm[...], cfg.rms_norm_eps)
    return x, KVCache(k=new_k, v=new_v, index=cache.index + T, start=cache.start, prefix=cache.prefix)


def paged_decode_applies(model, kv: PagedKV, tokens: jax.Array) -> bool:
    """Whether `paged_forward` runs this call's layers as one kernel call each: one token per row, the pool in
    the compute dtype, pages of a power-of-two size, a head size the kernel takes."""
    page = kv.page_size
    return tokens.shape[1] == 1 and page & (page - 1) == 0 and layer_kernel_takes(model, kv.k.dtype)


def layer_kernel_takes(model, store_dtype) -> bool:
    """Whether the one-call layer kernel computes this model's layers over keys and values stored in
    `store_dtype`: a compute dtype it has, the store in that dtype, a head size it takes."""
    return (model.dtype.name in layer.DTYPES and store_dtype == model.dtype
            and model.config.head_dim <= layer.MAX_HEAD_DIM)


def paged_forward(model, packed: dict, tokens: jax.Array, kv: PagedKV, view: PageView, attend_paged
                  ) -> tuple[jax.Array, PagedKV]:
    """The rollout engine's pass on the packed weights: tokens [B, T] at view.positions under the page pool ->
    (final hidden [B, T, d], the pool with their keys and values written), as `model.forward_paged(tokens, kv,
    view)`. A decode step (`paged_decode_applies`): each layer one kernel call that reads and writes the pool in
    place through the page table; otherwise (a prefill chunk) the layers op by op, attention by `attend_paged`
    (the backend's: q, k pool, v pool, layer, view)."""
    cfg, dtype = model.config, model.dtype
    cos, sin = rope_cos_sin(view.positions, cfg.head_dim, cfg.rope_theta)
    x = embedding.take_rows(model.embedding[...], tokens).astype(dtype)
    k, v = kv.k, kv.v
    one_call = paged_decode_applies(model, kv, tokens)
    for i in range(cfg.num_layers):
        block, weights = model.block(i), packed["layers"][i]
        if one_call:
            out, k, v = layer.decode_layer_paged(
                x[:, 0], block.attn_norm[...], _qkv_bias(block), block.mlp_norm[...], weights, cos[:, 0], sin[:, 0],
                k, v, i, view.page_table, view.lengths, eps=block.eps, intermediate=cfg.intermediate_size)
            x = out[:, None]
        else:
            def attend(q, new_k, new_v, stores=(k, v), i=i):  # the tokens' keys and values into the pool first
                stores = write_pages(stores[0], new_k, i, view), write_pages(stores[1], new_v, i, view)
                return attend_paged(q, *stores, i, view), stores

            x, (k, v) = _layer(block, weights, x, cos, sin, dtype, attend)
    return rms_norm(x, model.final_norm[...], cfg.rms_norm_eps), PagedKV(k=k, v=v)


def _qkv_bias(block) -> jax.Array:
    """The layer's q/k/v bias [K, G + 2, h], zeros for a layer without one (what the kernel takes)."""
    attn = block.attn
    return attn.qkv_bias[...] if attn.use_bias else jnp.zeros(attn.qkv_kernel.shape[1:], attn.qkv_kernel.dtype)


def _layer(block, weights: dict, x, cos, sin, dtype, attend):
    """One `common.model.Block` under a cache, op by op on packed weights. attend(q, k, v) -> (attention output,
    the cache's stores with the new k, v written): where the cache keeps them and how attention reads it."""
    attn = block.attn
    K, parts, h = attn.qkv_kernel.shape[1:]
    G = parts - 2
    qkv = packed_product(rms_norm(x, block.attn_norm[...], block.eps), weights["qkv"], 1, (K, parts, h), dtype)
    if attn.use_bias:
        qkv = qkv + attn.qkv_bias[...].astype(dtype)
    B, T = x.shape[:2]
    q = apply_rope(qkv[:, :, :, :G].reshape(B, T, K * G, h), cos, sin)
    out, stores = attend(q, apply_rope(qkv[:, :, :, G], cos, sin), qkv[:, :, :, G + 1])
    x = x + packed_product(out.astype(dtype), weights["o"], 2, (x.shape[-1],), dtype)
    gate_up = packed_product(rms_norm(x, block.mlp_norm[...], block.eps), weights["gate_up"], 1,
                             (2, block.mlp.down_kernel.shape[0]), dtype)
    hidden = swiglu(gate_up[:, :, 0], gate_up[:, :, 1])
    x = x + packed_product(hidden, weights["down"], 1, (x.shape[-1],), dtype)
    return x, stores
