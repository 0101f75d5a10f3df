"""Attention of one decode step on the CPU through our kernel (src/attention.cc), as an XLA FFI call.

XLA:CPU runs a decode step's attention as batched products of tiny matrices, one per batch row and kv head.
The kernel reads each row's cache once, over its visible slots only (the later slots of a static cache are
still empty), on XLA's intra-op threads, in float32. The backend (`cpu_kernels.backend`) uses it for a step
of one query per row.
"""

from __future__ import annotations

from cpu_kernels import build

DTYPES = ("float32", "bfloat16")
_TARGETS = {"float32": "QrrDecodeAttentionF32", "bfloat16": "QrrDecodeAttentionBf16"}


def decode_attention(q, keys, values, mask):
    """q [B, K, G, h], keys and values [B, S, K, h] (the decoder's cache), mask [B, S] bool (slot visible)
    -> float32 [B, K, G, h]: per row and kv head, the softmax over the visible slots of q . key / sqrt(h),
    times the values. A row with no visible slot gets zeros. q, keys and values share a dtype (float32 or
    bfloat16)."""
    import jax
    import jax.numpy as jnp

    B, K, G, h = q.shape
    S = keys.shape[1]
    if keys.shape != (B, S, K, h) or values.shape != (B, S, K, h) or mask.shape != (B, S):
        raise ValueError(f"decode attention shapes disagree: q {q.shape}, keys {keys.shape}, values {values.shape}, "
                         f"mask {mask.shape}")
    dtype = jnp.dtype(q.dtype)
    if dtype.name not in _TARGETS or keys.dtype != dtype or values.dtype != dtype:
        raise ValueError(f"decode attention takes float32 or bfloat16 q, keys and values of one dtype, got "
                         f"{q.dtype}, {keys.dtype}, {values.dtype}")
    build.require()
    return jax.ffi.ffi_call(_TARGETS[dtype.name], jax.ShapeDtypeStruct(q.shape, jnp.float32),
                            vmap_method="sequential")(q, keys, values, mask.astype(jnp.bool_))
