"""Attention of one decode step on the CPU through our kernel (cpu_attention.cc), as an XLA FFI call.

XLA:CPU ran a decode step's attention as batched products of tiny matrices, one per batch row and kv head:
~24 of ~100 ms a step at batch 32 in float32 (profile in docs/benchmarks.md). The kernel reads each row's
cache once, over its visible slots only (the later slots of a static cache are still empty), on XLA's
intra-op threads, in float32. `common.model.gqa_attention` uses it for a step of one query per row when
`routed`: on the CPU backend outside a mesh, where the kernels could be built (`common.kernels.cpu_build`).
"""

from __future__ import annotations

from common.kernels import cpu_build

_TARGETS = {"float32": "QrrDecodeAttentionF32", "bfloat16": "QrrDecodeAttentionBf16"}


def routed(dtype="float32") -> bool:
    """Whether decode attention over a cache of `dtype` runs on the kernel here."""
    import jax.numpy as jnp

    return jnp.dtype(dtype).name in _TARGETS and cpu_build.usable()


def decode_attention(q, keys, values, mask):
    """q [B, K, G, h], keys [B, K, h, S] (slot axis minor), values [B, K, S, h], mask [B, S] bool (slot
    visible) -> float32 [B, K, G, h]: per row and kv head, the softmax over the visible slots of
    q . key / sqrt(h), times the values. A row with no visible slot gets zeros. q, keys and values share a
    dtype (float32 or bfloat16)."""
    import jax
    import jax.numpy as jnp

    B, K, G, h = q.shape
    S = keys.shape[-1]
    if keys.shape != (B, K, h, S) or values.shape != (B, K, S, h) or mask.shape != (B, S):
        raise ValueError(f"decode attention shapes disagree: q {q.shape}, keys {keys.shape}, values {values.shape}, "
                         f"mask {mask.shape}")
    dtype = jnp.dtype(q.dtype)
    if dtype.name not in _TARGETS or keys.dtype != dtype or values.dtype != dtype:
        raise ValueError(f"decode attention takes float32 or bfloat16 q, keys and values of one dtype, got "
                         f"{q.dtype}, {keys.dtype}, {values.dtype}")
    cpu_build.require()
    return jax.ffi.ffi_call(_TARGETS[dtype.name], jax.ShapeDtypeStruct(q.shape, jnp.float32),
                            vmap_method="sequential")(q, keys, values, mask.astype(jnp.bool_))
