"""One decoder layer of a decode step on the CPU through our kernel (src/layer.cc), as one XLA FFI call.

A decode step of a small model is ~20 short operations a layer: four weight products, the attention, two cache
writes and the norms, RoPE, bias, SwiGLU and residual adds between them, each its own XLA thunk, each product
waking a second thread. The kernel runs the whole layer in one call on one team of threads (the caller and
XLA's intra-op threads, woken once per call), on the weights packed for `cpu_kernels.products` and rounding to
the compute dtype where `common.model`'s layer does. The backend (`cpu_kernels.backend`) uses it for a step of
one token per row under a cache in the compute dtype: the sampler's cache (`decode_layer`) or the rollout
engine's page pool, read in place through each row's page table (`decode_layer_paged`).
"""

from __future__ import annotations

from cpu_kernels import build

DTYPES = ("float32", "bfloat16")
MAX_HEAD_DIM = 1024  # kMaxHead in the source


def decode_layer(x, attn_norm, qkv_bias, mlp_norm, panels: dict, cos, sin, k_cache, v_cache, index, mask, *,
                 eps: float, intermediate: int):
    """x [B, d] (the residual stream, compute dtype E) -> (x after the layer [B, d], k_cache, v_cache with slot
    `index` written).

    attn_norm, mlp_norm [d] and qkv_bias [K, G + 2, h] in E (zeros for a layer without biases); panels: the
    layer's {"qkv", "o", "gate_up", "down"} from `cpu_kernels.backend.pack_weights`; cos, sin [B, h] float32 (RoPE
    of each row's position); k_cache, v_cache [B, S, K, h] in E (updated in place: the outputs alias them);
    index: int32 scalar slot; mask [B, S] bool, the slots each row attends to (the new one included)."""
    import jax.numpy as jnp

    B = x.shape[0]
    _, S, K, h = k_cache.shape
    if v_cache.shape != (B, S, K, h) or k_cache.shape[0] != B or mask.shape != (B, S):
        raise ValueError(f"decode layer shapes disagree: x {x.shape}, k_cache {k_cache.shape}, v_cache "
                         f"{v_cache.shape}, mask {mask.shape}")
    return _call("QrrDecodeLayer", x, attn_norm, qkv_bias, mlp_norm, panels, cos, sin, k_cache, v_cache,
                 (jnp.asarray(index, jnp.int32), mask.astype(jnp.bool_)), K, h, eps, intermediate)


def decode_layer_paged(x, attn_norm, qkv_bias, mlp_norm, panels: dict, cos, sin, k_pool, v_pool, layer: int,
                       page_table, lengths, *, eps: float, intermediate: int):
    """`decode_layer` over the engine's page pool (`common.paged_kv`): k_pool, v_pool [K, L, N, page, h] in E
    (page a power of two; updated in place), `layer` this layer's index in them, page_table [B, P] int32 (each
    row's pages in order), lengths [B] int32 (each row's length with this token: it is written at position
    length - 1 and the row attends to positions [0, length); 0: a padding row, which writes nothing)."""
    import jax.numpy as jnp

    B = x.shape[0]
    K, _, _, page, h = k_pool.shape
    if v_pool.shape != k_pool.shape or page_table.ndim != 2 or page_table.shape[0] != B or lengths.shape != (B,):
        raise ValueError(f"paged decode layer shapes disagree: x {x.shape}, k_pool {k_pool.shape}, v_pool "
                         f"{v_pool.shape}, page_table {page_table.shape}, lengths {lengths.shape}")
    if page & (page - 1):
        raise ValueError(f"the paged decode layer takes pages of a power-of-two size, got {page}")
    return _call("QrrDecodeLayerPaged", x, attn_norm, qkv_bias, mlp_norm, panels, cos, sin, k_pool, v_pool,
                 (jnp.asarray(layer, jnp.int32), page_table.astype(jnp.int32), lengths.astype(jnp.int32)), K, h,
                 eps, intermediate)


def _call(target: str, x, attn_norm, qkv_bias, mlp_norm, panels: dict, cos, sin, keys, values, where: tuple, K: int,
          h: int, eps: float, intermediate: int):
    """The kernel `target` + dtype on one layer: (x out, keys, values), keys and values updated in place; `where`
    the arguments after them that say which slots (the cache's index and mask, or the pool's layer, page table
    and lengths)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    dtype = jnp.dtype(x.dtype)
    if dtype.name not in DTYPES:
        raise ValueError(f"the decode-layer kernel takes float32 or bfloat16, got {dtype.name}")
    B, d = x.shape
    if (cos.shape != (B, h) or sin.shape != (B, h) or attn_norm.shape != (d,) or mlp_norm.shape != (d,)
            or qkv_bias.ndim != 3 or qkv_bias.shape[::2] != (K, h)):
        raise ValueError(f"decode layer shapes disagree: x {x.shape}, keys {keys.shape}, cos {cos.shape}, norms "
                         f"{attn_norm.shape} {mlp_norm.shape}, qkv_bias {qkv_bias.shape}")
    for name in ("qkv", "o", "gate_up", "down"):
        if panels[name].dtype != dtype:
            raise ValueError(f"the packed {name} weight is {panels[name].dtype}, the layer computes in {dtype.name}")
    if h > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {h} is larger than the kernel's {MAX_HEAD_DIM}")
    build.require()
    cast = lambda a: a.astype(dtype)
    out_types = (jax.ShapeDtypeStruct(x.shape, dtype), jax.ShapeDtypeStruct(keys.shape, dtype),
                 jax.ShapeDtypeStruct(values.shape, dtype))
    name = target + ("F32" if dtype.name == "float32" else "Bf16")
    call = jax.ffi.ffi_call(name, out_types, input_output_aliases={10: 1, 11: 2}, vmap_method="sequential")
    return call(x, cast(attn_norm), panels["qkv"], cast(qkv_bias).reshape(-1), panels["o"], cast(mlp_norm),
                panels["gate_up"], panels["down"], cos.astype(jnp.float32), sin.astype(jnp.float32),
                cast(keys), cast(values), *where, eps=np.float32(eps), intermediate=np.int64(intermediate))
