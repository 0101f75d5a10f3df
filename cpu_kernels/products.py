"""Decode-step weight products on the CPU through our own kernels (src/products.cc), as XLA FFI calls.

A decode step multiplies a few rows by every weight matrix once. XLA:CPU reads a row-major weight on one
thread and packs it again for every product, so a few rows ran far below the memory bandwidth (float32) or
the compute peak (bfloat16 at 32 rows). Here every weight is packed once into panels of 32 columns (`pack`;
`cpu_kernels.backend.pack_weights`, which the sampler asks for once per parameter version and keeps: a second
copy of the weights), and the kernels stream the panels over XLA's intra-op threads with the rows' accumulators in
registers; bfloat16 through vdpbf16ps. The results agree with XLA's products to float32 rounding
(cpu_kernels/tests/test_products.py).
"""

from __future__ import annotations

from cpu_kernels import build

PANEL = 32  # columns per packed panel (kPanel in the source)
_TARGETS = {"float32": "QrrPackedF32", "bfloat16": "QrrPackedBf16"}
_PACK_TARGETS = {"float32": "QrrPackF32", "bfloat16": "QrrPackBf16"}


def available_memory() -> int:
    """Bytes of host memory available now (MemAvailable; else physical memory; 0 when unknown)."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def room_for_a_packed_copy(weight_bytes: int) -> bool:
    """Whether a packed copy of `weight_bytes` of weights leaves at least as much memory free again."""
    return 2 * weight_bytes <= available_memory()


def pack(w, transposed: bool = False):
    """w [K, N] (transposed: [N, K], a tied embedding read as the head) -> panels of PANEL columns, zero-padded:
    float32 [P, K, PANEL]; bfloat16 [P, K/2, PANEL, 2] (rows k, k+1 interleaved per column; K padded to
    even). On the kernels' threads: XLA's own transposes took ~0.3 s for SmolLM2-135M in float32."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(w.dtype)
    if dtype.name not in _PACK_TARGETS:
        raise ValueError(f"the CPU kernels take float32 or bfloat16 weights, got {dtype.name}")
    build.require()
    N, K = w.shape if transposed else w.shape[::-1]
    P = -(-N // PANEL)
    shape = (P, (K + 1) // 2, PANEL, 2) if dtype == jnp.bfloat16 else (P, K, PANEL)
    return jax.ffi.ffi_call(_PACK_TARGETS[dtype.name], jax.ShapeDtypeStruct(shape, dtype),
                            vmap_method="sequential")(w, transposed=transposed)


def packed_matmul(x, panels, n: int):
    """x [M, K] . the packed weight `panels` (from `pack`) -> float32 [M, n], n the weight's columns before
    padding. x is converted to the panels' dtype (in the decoder they are the same)."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(panels.dtype)
    if dtype.name not in _TARGETS:
        raise ValueError(f"the CPU kernels take float32 or bfloat16 weights, got {dtype.name}")
    M, K = x.shape
    pairs = dtype == jnp.bfloat16
    packed_k = 2 * panels.shape[1] if pairs else panels.shape[1]
    if packed_k != K + (K % 2 if pairs else 0):
        raise ValueError(f"x [M={M}, K={K}] does not match the packed weight {panels.shape} ({dtype.name})")
    build.require()
    x = jnp.pad(x.astype(dtype), ((0, 0), (0, packed_k - K)))
    out = jax.ffi.ffi_call(_TARGETS[dtype.name], jax.ShapeDtypeStruct((M, panels.shape[0] * PANEL), jnp.float32),
                           vmap_method="sequential")(x, panels)
    return out[:, :n]


def matmul(x, w, transposed: bool = False):
    """x [M, K] . w [K, N] (or w [N, K] transposed) -> float32 [M, N] on the kernels, packing w first."""
    if (w.shape[1] if transposed else w.shape[0]) != x.shape[1]:
        raise ValueError(f"contracting sizes differ: x {x.shape}, w {w.shape} (transposed={transposed})")
    return packed_matmul(x, pack(w, transposed), w.shape[0] if transposed else w.shape[1])
