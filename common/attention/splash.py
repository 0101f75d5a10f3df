"""TPU attention: the Pallas splash-attention kernel (`jax.experimental.pallas.ops.tpu.splash_attention`) for
training and prefill, wrapped in `shard_map` over the mesh (a Mosaic kernel cannot be partitioned by GSPMD):
rows over ("data", "fsdp"), heads over "tensor".

The kernel runs where a static causal mask plus segment ids express the `Visibility`: the keys are the
queries' own T slots (S == T: training, and the prefill of an empty cache, whose queries sit in slots
0..T-1), no shared prefix. Left padding becomes segment ids: slots from start[b] on are segment 1, padding
segment 0, so a padding query sees padding slots only (a finite value the decoder never reads; the reference
gives it the mean of the values). Everything else falls back: a decode step (T = 1) to the dense reference,
as `XlaAttention` runs it; a cached prefill after earlier slots (S > T) or a shared prefix (prefix not None)
to `blockwise_attention`.

Under the engine's paged cache (`attend_paged`) a decode step runs the Pallas paged-attention kernel in
shard_map, a prefill chunk the XLA gather (`common.attention.paged_tpu`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from common.attention.base import Visibility
from common.attention.kernel_backend import KernelBackend
from common.attention.paged_tpu import paged_tpu_attention
from common.paged_kv import LANES  # a TPU vector register's lanes: the smallest block

BLOCK = 512  # query tokens and key slots a kernel tile (the sequence is padded to a multiple of it)


def kernel_applies(q: jax.Array, k: jax.Array, visibility: Visibility) -> bool:
    """Whether the splash kernel expresses this call (else a fallback runs): see the module docstring."""
    return q.shape[1] > 1 and q.shape[1] == k.shape[1] and visibility.prefix is None


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, start: jax.Array, block_q: int = BLOCK,
                     block_k: int = BLOCK, interpret: bool = False) -> jax.Array:
    """On one device (or one shard): causal self-attention of q [B, T, H, h] over k/v [B, T, K, h] whose row b
    starts at slot start[b] -> [B, T, H, h] in q's dtype. T is padded to a multiple of the blocks; blocks
    shrink to T (rounded up to 128) when it is shorter. interpret: run the kernel in Pallas's interpreter
    (CPU tests)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

    B, T, H, h = q.shape
    bq, bk = (min(b, -(-T // LANES) * LANES) for b in (block_q, block_k))
    L = -(-T // math.lcm(bq, bk)) * math.lcm(bq, bk)
    heads_first = lambda x: jnp.pad(x, ((0, 0), (0, L - T), (0, 0), (0, 0))).transpose(0, 2, 1, 3)  # noqa: E731
    slots = jnp.arange(L, dtype=jnp.int32)
    segments = ((slots[None] >= start[:, None]) & (slots[None] < T)).astype(jnp.int32)  # [B, L]: 1 real, 0 padding
    kernel = _kernel(L, H, bq, bk, interpret)
    q = (q.astype(jnp.float32) / math.sqrt(h)).astype(q.dtype)  # the kernel does not scale the scores
    out = jax.vmap(kernel)(heads_first(q), heads_first(k), heads_first(v), SegmentIds(segments, segments))
    return out.transpose(0, 2, 1, 3)[:, :T]


def _kernel(length: int, heads: int, bq: int, bk: int, interpret: bool):
    """The splash kernel for a causal [length, length] mask on `heads` query heads, forward and backward tiles
    of bq x bk; its block-sparsity tables skip the tiles above the diagonal. Built anew in each trace (a tenth
    of a second, the mask tables cached by the splash module), so its tables are that trace's constants: made
    as concrete arrays instead, they would need a device, and a compile for a TPU topology on a CPU host
    (`common.aot`) has none that can hold them."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    mask = splash.MultiHeadMask([splash.CausalMask((length, length))] * heads)
    sizes = splash.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
                              block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
    return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def sharded_splash_attention(q, k, v, start, mesh, block_q: int = BLOCK, block_k: int = BLOCK,
                             interpret: bool = False) -> jax.Array:
    """`splash_attention` under `mesh` (None or one device: as is): each device runs the kernel on its rows
    (over "data" and "fsdp") and its kv heads with their query heads (over "tensor"). An axis that does not
    divide the rows or the kv heads is not split (each device computes those whole)."""
    run = functools.partial(splash_attention, block_q=block_q, block_k=block_k, interpret=interpret)
    if mesh is None or mesh.size == 1:
        return run(q, k, v, start)
    sizes = dict(mesh.shape)
    rows = tuple(a for a in ("data", "fsdp") if sizes.get(a, 1) > 1)
    rows = rows if rows and q.shape[0] % math.prod(sizes[a] for a in rows) == 0 else None
    heads = "tensor" if sizes.get("tensor", 1) > 1 and k.shape[2] % sizes["tensor"] == 0 else None
    spec = P(rows, None, heads, None)
    return jax.shard_map(run, mesh=mesh, in_specs=(spec, spec, spec, P(rows)), out_specs=spec,
                         check_vma=False)(q, k, v, start)


class SplashAttention(KernelBackend):
    """The splash kernel where it applies (`kernel_applies`), else the XLA paths (module docstring).

    mesh: the mesh the model runs under (None: one device); `select_backend("splash", mesh=mesh)` passes it.
    block_q, block_k: kernel tiles (multiples of 128). interpret: Pallas's interpreter, for tests on CPU."""

    name = "splash"

    def __init__(self, mesh=None, block_q: int = BLOCK, block_k: int = BLOCK, interpret: bool = False):
        self.mesh, self.block_q, self.block_k, self.interpret = mesh, block_q, block_k, interpret

    @classmethod
    def for_mesh(cls, mesh):
        return cls(mesh)

    @classmethod
    def suits(cls, platform, mesh) -> bool:
        return platform == "tpu"

    def check_mesh(self, mesh) -> None:
        if mesh is not None and mesh.size > 1 and mesh != self.mesh:
            raise ValueError("the splash backend runs its kernel in shard_map over the mesh it was made for: "
                             "select it with that mesh (select_backend('splash', mesh=mesh))")

    def kernel_applies(self, q, k, visibility: Visibility) -> bool:
        return kernel_applies(q, k, visibility)

    def kernel(self, q, k, v, start):
        return sharded_splash_attention(q, k, v, start, self.mesh, self.block_q, self.block_k, self.interpret)

    def attend_paged(self, q, k_pool, v_pool, layer, view):
        """A decode step: the Pallas paged-attention kernel; a prefill chunk: the XLA gather (`paged_tpu`)."""
        return paged_tpu_attention(q, k_pool, v_pool, layer, view, self.mesh, self.interpret)

    def __repr__(self):
        return (f"SplashAttention(mesh={None if self.mesh is None else dict(self.mesh.shape)}, "
                f"block_q={self.block_q}, block_k={self.block_k}, interpret={self.interpret})")
