"""One decoder layer of a decode step on the CPU through our kernel (cpu_layer.cc), as one XLA FFI call.

A decode step of a small model is ~20 short operations a layer: four weight products, the attention, two cache
writes and the norms, RoPE, bias, SwiGLU and residual adds between them, each its own XLA thunk, each product
waking a second thread. The kernel runs the whole layer in one call on one team of threads (the caller and
XLA's intra-op threads, woken once per call), on the weights packed for `cpu_products` and rounding to the
compute dtype where `common.model`'s own path does. `common.model.Block` uses it for a step of one token per row
under a cache with packed weights (`Decoder.decode_panels`), when `routed`: on the CPU backend outside a mesh,
where the kernels could be built (`common.kernels.cpu_build`), for a cache in the compute dtype, in the compute
dtypes where it measured faster (`FASTER`).
For programs traced after it is set, QRR_CPU_LAYER_KERNEL=0 keeps the kernels op by op and =all uses the layer
kernel in every dtype it is built for (comparisons: tools/bench_decode_step.py).
"""

from __future__ import annotations

from common.kernels import cpu_build

_TARGETS = {"float32": "QrrDecodeLayerF32", "bfloat16": "QrrDecodeLayerBf16"}
MAX_HEAD_DIM = 1024  # kMaxHead in the source


def routed(dtype, cache_dtype, head_dim: int) -> bool:
    """Whether a decode step's layer in compute `dtype` over a cache of `cache_dtype` runs on the kernel here."""
    import os

    import jax.numpy as jnp

    dtype, switch = jnp.dtype(dtype), os.environ.get("QRR_CPU_LAYER_KERNEL", "1")
    dtypes = {"0": (), "all": _TARGETS}.get(switch, FASTER)
    return (dtype.name in dtypes and jnp.dtype(cache_dtype) == dtype and head_dim <= MAX_HEAD_DIM
            and cpu_build.usable())


# Compute dtypes where the layer kernel measured faster than our kernels op by op (docs/benchmarks.md, 2 cores,
# SmolLM2-135M, a 128-token generate call): on 2026-12-02, with the products' prefetch and AMX, in both dtypes at
# every batch (float32 5 / 8 / 6 % at batch 1 / 8 / 32, bfloat16 3 / 19 / 14 %). On 2026-11-25 float32 had measured
# no faster (0.90-1.01x) and was left op by op.
FASTER = {"float32", "bfloat16"}


def decode_layer(x, attn_norm, qkv_bias, mlp_norm, panels: dict, cos, sin, k_cache, v_cache, index, mask, *,
                 eps: float, intermediate: int):
    """x [B, d] (the residual stream, compute dtype E) -> (x after the layer [B, d], k_cache, v_cache with slot
    `index` written).

    attn_norm, mlp_norm [d] and qkv_bias [K, G + 2, h] in E (zeros for a layer without biases); panels: the
    layer's {"qkv", "o", "gate_up", "down"} from `Decoder.decode_panels`; cos, sin [B, h] float32 (RoPE of each
    row's position); k_cache [B, K, h, S], v_cache [B, K, S, h] in E (updated in place: the outputs alias them);
    index: int32 scalar slot; mask [B, S] bool, the slots each row attends to (the new one included)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    dtype = jnp.dtype(x.dtype)
    if dtype.name not in _TARGETS:
        raise ValueError(f"the decode-layer kernel takes float32 or bfloat16, got {dtype.name}")
    B, d = x.shape
    _, K, h, S = k_cache.shape
    if (v_cache.shape != (B, K, S, h) or k_cache.shape[0] != B or cos.shape != (B, h) or sin.shape != (B, h)
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
    cpu_build.require()
    cast = lambda a: a.astype(dtype)
    out_types = (jax.ShapeDtypeStruct(x.shape, dtype), jax.ShapeDtypeStruct(k_cache.shape, dtype),
                 jax.ShapeDtypeStruct(v_cache.shape, dtype))
    call = jax.ffi.ffi_call(_TARGETS[dtype.name], out_types, input_output_aliases={10: 1, 11: 2},
                            vmap_method="sequential")
    return call(x, cast(attn_norm), panels["qkv"], cast(qkv_bias).reshape(-1), panels["o"], cast(mlp_norm),
                panels["gate_up"], panels["down"], cos.astype(jnp.float32), sin.astype(jnp.float32),
                cast(k_cache), cast(v_cache), jnp.asarray(index, jnp.int32), mask.astype(jnp.bool_),
                eps=np.float32(eps), intermediate=np.int64(intermediate))
