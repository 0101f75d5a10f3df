"""Decode steps over the engine's paged cache with the Pallas TPU paged-attention kernel
(`jax.experimental.pallas.ops.tpu.paged_attention`), in `shard_map` over the mesh (a Mosaic kernel cannot be
partitioned by GSPMD): rows as the rules table splits "batch", kv heads (the pool's axis 0) and their query
heads as it splits "act_kv_heads" (`common.sharding.LOGICAL_RULES`, the pool's `common.paged_kv.PAGE_AXES`).

The kernel reads a layer's pages straight from the flattened pool [K, L * N, page, h] (`flat_pool`, no copy)
through `layer_page_table`. It runs for a decode step (T == 1) only: a prefill chunk (T > 1, several queries a
row, each seeing keys up to its own position) runs the XLA reference `paged_reference_attention`, as does any
call whose shapes the kernel does not take (`kernel_unsuited`), then with a warning once per reason.

What the kernel requires, from its source and compiles for v5p through libtpu:
- head_dim a multiple of 128 (the lane width: Mosaic refuses blocks of 64, 96 or 192; SmolLM2's 64 falls
  back). Any page size compiles (1 to 32 tried); small pages make small DMAs, one a page.
- a bfloat16 pool: the kernel rounds keys and values to bfloat16 as it loads them, whatever their dtype, so a
  float32 pool would silently lose precision (it falls back instead); a float16 pool does not compile.
- it does not scale the scores: q is scaled by 1/sqrt(h) here, in float32, and given to the kernel in float32
  (the kernel computes in float32 from there on, probabilities included).
- pages_per_compute_block must divide the page table's width (`pages_per_compute_block`).
- a row of length 0 is skipped (its output is 0, nothing of it is read; the other rows are unaffected), so
  padding rows (lengths 0, page tables of the null page) cost nothing.
- megacore_mode stays None (one TensorCore a chip): its "batch" / "kv_head" modes split the grid over a v4 /
  v5p chip's two cores but hang where the chip is not run as one megacore device, which the device objects do
  not tell reliably; worth measuring on a v5p.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from common.attention.paged import paged_reference_attention
from common.paged_kv import LANES, PAGE_AXES, PageView, flat_pool, layer_page_table
from common.sharding import logical_to_spec, manual_axes, without_axes

# Keys a compute block of the kernel loads (one DMA a page, double-buffered), as MaxText's default (4 pages of 32
# tokens): larger blocks put more DMAs in flight, smaller ones read less past a row's last key (half a block a
# row and kv head on average). Not measured here (no TPU): a knob to tune on one.
BLOCK_KEYS = 128


def pages_per_compute_block(pages: int, page_size: int, block_keys: int = BLOCK_KEYS) -> int:
    """The kernel's pages a compute block: the largest divisor of the table's width `pages` (the kernel requires
    one) whose keys fit `block_keys`, at least 1. With the engine's power-of-two widths and pages it is
    min(pages, block_keys // page_size): 8 pages of 16 for a table of >= 8 pages."""
    fit = max(1, block_keys // page_size)
    return max(d for d in range(1, min(pages, fit) + 1) if pages % d == 0)


def kernel_unsuited(q: jax.Array, k_pool: jax.Array) -> str | None:
    """Why the kernel cannot take a decode step with q [B, 1, H, h] over k_pool [K, L, N, page, h] (None: it
    can): the module docstring's requirements."""
    h = q.shape[-1]
    if h % LANES:
        return f"head_dim {h} is not a multiple of {LANES}"
    if k_pool.dtype != jnp.bfloat16:
        return (f"the pool is {k_pool.dtype}: the kernel rounds keys and values to bfloat16 (and takes no "
                "float16)")
    return None


@functools.cache
def warn_fallback(reason: str) -> None:
    """One warning a process per reason: decode attention runs the XLA gather instead of the kernel."""
    warnings.warn(f"TPU paged attention: {reason}, so decode steps use the XLA reference "
                  "(common.attention.paged) instead of the Pallas kernel", stacklevel=3)


def paged_decode_attention(q: jax.Array, k_pages: jax.Array, v_pages: jax.Array, lengths: jax.Array,
                           page_indices: jax.Array, interpret: bool = False) -> jax.Array:
    """On one device (or one shard): q [B, H, h], k/v pages [K, total pages, page, h], lengths [B] int32 (row b
    sees its keys at positions < lengths[b]; 0: none, output 0), page_indices [B, P] int32 -> [B, H, h] in q's
    dtype. interpret: Pallas's TPU interpreter (CPU tests)."""
    from jax.experimental.pallas import tpu as pltpu
    from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention

    scaled = q.astype(jnp.float32) / math.sqrt(q.shape[-1])  # the kernel does not scale the scores
    block = pages_per_compute_block(page_indices.shape[1], k_pages.shape[2])
    with pltpu.force_tpu_interpret_mode() if interpret else contextlib.nullcontext():
        out = paged_attention(scaled, k_pages, v_pages, lengths.astype(jnp.int32), page_indices.astype(jnp.int32),
                              pages_per_compute_block=block)
    return out.astype(q.dtype)


def decode_specs(mesh, batch: int, kv_heads: int) -> tuple[P, P, P, P]:
    """PartitionSpecs (q [B, H, h], pool [K, L * N, page, h], lengths [B], page table [B, P]) under `mesh`, from
    the rules table: rows as "batch", heads as the pool's kv-head axis; a mesh axis that does not divide the rows
    or the kv heads is not split (each device computes those whole). Query heads follow the kv heads, so each
    shard holds whole groups."""
    rows, heads = logical_to_spec(("batch", PAGE_AXES[0]), (batch, kv_heads), mesh, warn=False)
    return P(rows, heads, None), P(heads, None, None, None), P(rows), P(rows, None)


def sharded_paged_decode_attention(q, k_pages, v_pages, lengths, page_indices, mesh, interpret: bool = False
                                   ) -> jax.Array:
    """`paged_decode_attention` under `mesh` (None or one device: as is), in shard_map (`decode_specs`). Inside
    the engine's shard_map over the batch axes (per-shard pools) the arrays are already one batch shard's: the
    kernel's shard_map then splits only the remaining axes (`tensor`)."""
    run = functools.partial(paged_decode_attention, interpret=interpret)
    if mesh is None or mesh.size == 1:
        return run(q, k_pages, v_pages, lengths, page_indices)
    manual = manual_axes()
    specs = [without_axes(spec, manual) for spec in decode_specs(mesh, q.shape[0], k_pages.shape[0])]
    if manual:  # the kernel manual over every axis (the interpreter's callbacks ask for it too)
        kwargs = dict(axis_names=frozenset(mesh.axis_names) - manual)  # the mesh in context: the outer one's
    else:
        kwargs = dict(mesh=mesh)
    q_spec, pool_spec, rows_spec, table_spec = specs
    return jax.shard_map(run, in_specs=(q_spec, pool_spec, pool_spec, rows_spec, table_spec), out_specs=q_spec,
                         check_vma=False, **kwargs)(q, k_pages, v_pages, lengths, page_indices)


def decode_lengths(view: PageView) -> jax.Array:
    """[B] int32 keys each row's one query sees: through its position (the reference's causal rule; in a
    decode step view.lengths), 0 for a padding row (the kernel skips it)."""
    return jnp.where(view.valid()[:, 0], view.positions[:, 0] + 1, 0).astype(jnp.int32)


def paged_tpu_attention(q: jax.Array, k_pool: jax.Array, v_pool: jax.Array, layer, view: PageView, mesh=None,
                        interpret: bool = False) -> jax.Array:
    """The TPU backend's `attend_paged`: q [B, T, H, h] of `layer` (an int or a traced int32 scalar), its keys
    and values already in the pools [K, L, N, page, h] -> [B, T, H, h] in q's dtype. T == 1: the Pallas kernel
    in shard_map over `mesh`; T > 1, or shapes the kernel does not take: `paged_reference_attention`."""
    if q.shape[1] != 1:
        return paged_reference_attention(q, k_pool, v_pool, layer, view)
    reason = kernel_unsuited(q, k_pool)
    if reason is not None:
        warn_fallback(reason)
        return paged_reference_attention(q, k_pool, v_pool, layer, view)
    table = layer_page_table(view.page_table, layer, k_pool.shape[2])
    out = sharded_paged_decode_attention(q[:, 0], flat_pool(k_pool), flat_pool(v_pool), decode_lengths(view),
                                         table, mesh, interpret)
    return out[:, None]
