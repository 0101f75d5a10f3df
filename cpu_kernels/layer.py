"""One decoder layer of a decode step on the CPU through our kernel (src/layer.cc), as one XLA FFI call.

A decode step of a small model is ~20 short operations a layer: four weight products, the attention, two cache
writes and the norms, RoPE, bias, SwiGLU and residual adds between them, each its own XLA thunk, each product
waking a second thread. The kernel runs the whole layer in one call on one team of threads (the caller and
XLA's intra-op threads, woken once per call), on the weights packed for `cpu_kernels.products` and rounding to
the compute dtype where `common.model`'s layer does. The backend (`cpu_kernels.backend`) uses it for a step of
one token per row under a cache in the compute dtype.
"""

from __future__ import annotations

from cpu_kernels import build

DTYPES = ("float32", "bfloat16")
_TARGETS = {"float32": "QrrDecodeLayerF32", "bfloat16": "QrrDecodeLayerBf16"}
MAX_HEAD_DIM = 1024  # kMaxHead in the source


def decode_layer(x, attn_norm, qkv_bias, mlp_norm, panels: dict, cos, sin, k_cache, v_cache, index, mask, *,
                 eps: float, intermediate: int):
    """x [B, d] (the residual stream, compute dtype E) -> (x after the layer [B, d], k_cache, v_cache with slot
    `index` written).

    attn_norm, mlp_norm [d] and qkv_bias [K, G + 2, h] in E (zeros for a layer without biases); panels: the
    layer's {"qkv", "o", "gate_up", "down"} from `cpu_kernels.backend.pack_weights`; cos, sin [B, h] float32 (RoPE
    of each row's position); k_cache, v_cache [B, S, K, h] in E (updated in place: the outputs alias them);
    index: int32 scalar slot; mask [B, S] bool, the slots each row attends to (the new one included)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    dtype = jnp.dtype(x.dtype)
    if dtype.name not in _TARGETS:
        raise ValueError(f"the decode-layer kernel takes float32 or bfloat16, got {dtype.name}")
    B, d = x.shape
    _, S, K, h = k_cache.shape
    if (v_cache.shape != (B, S, K, h) or k_cache.shape[0] != B or cos.shape != (B, h) or sin.shape != (B, h)
            or mask.shape != (B, S) or attn_norm.shape != (d,) or mlp_norm.shape != (d,)
            or qkv_bias.ndim != 3 or qkv_bias.shape[::2] != (K, h)):
        raise ValueError(f"decode layer shapes disagree: x {x.shape}, k_cache {k_cache.shape}, v_cache "
                         f"{v_cache.shape}, cos {cos.shape}, mask {mask.shape}, norms {attn_norm.shape} "
                         f"{mlp_norm.shape}, qkv_bias {qkv_bias.shape}")
    for name in ("qkv", "o", "gate_up", "down"):
        if panels[name].dtype != dtype:
            raise ValueError(f"the packed {name} weight is {panels[name].dtype}, the layer computes in {dtype.name}")
    if h > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {h} is larger than the kernel's {MAX_HEAD_DIM}")
    build.require()
    cast = lambda a: a.astype(dtype)
    out_types = (jax.ShapeDtypeStruct(x.shape, dtype), jax.ShapeDtypeStruct(k_cache.shape, dtype),
                 jax.ShapeDtypeStruct(v_cache.shape, dtype))
    call = jax.ffi.ffi_call(_TARGETS[dtype.name], out_types, input_output_aliases={10: 1, 11: 2},
                            vmap_method="sequential")
    return call(x, cast(attn_norm), panels["qkv"], cast(qkv_bias).reshape(-1), panels["o"], cast(mlp_norm),
                panels["gate_up"], panels["down"], cos.astype(jnp.float32), sin.astype(jnp.float32),
                cast(k_cache), cast(v_cache), jnp.asarray(index, jnp.int32), mask.astype(jnp.bool_),
                eps=np.float32(eps), intermediate=np.int64(intermediate))
