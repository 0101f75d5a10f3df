"""The "cpu" attention backend: the decoder's sampling on the CPU kernels, behind `common.attention`'s seam.

Training and every pass without a cache stay the reference's (`XlaAttention`). Under a cache:
  - a sampler call of at most `MAX_ROWS` rows in float32 or bfloat16 runs `cached_forward` on the weights
    packed once per parameter version (`pack_weights`; a second copy of the weights, made only when as much
    memory is free again): a decode step's layers as one kernel call each (`layer_kernel`), a prefill's
    products on the packed panels;
  - otherwise the decoder's own pass, with a decode step's attention on the attention kernel.
The rollout engine's calls (`paged_forward`) run the same way: a decode step's layers one kernel call each,
reading the page pool in place; a prefill chunk's products on the packed panels.
`select_backend("auto")` picks it on the CPU platform for one device, where the kernels build (x86-64 with
AVX-512 BF16 and a C++ compiler); asked for by name under a mesh of several devices it refuses.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

from common.attention import XlaAttention
from cpu_kernels import attention, build, forward, products

# Most rows a sampler call runs on the packed weights: the kernels measured faster than XLA's products at
# every batch from 1 to 128, in both dtypes, counting the packing (docs/benchmarks.md); more was not measured.
MAX_ROWS = 128


@functools.lru_cache(maxsize=8)
def _packer(graphdef):
    """`forward.pack_weights` jitted for one decoder structure: traced once, not once per parameter version."""
    from flax import nnx

    return jax.jit(lambda state: forward.pack_weights(nnx.merge(graphdef, state)))


def _one_device(mesh) -> bool:
    return mesh is None or mesh.size == 1


class CpuKernels(XlaAttention):
    """layer_kernel: a decode step's layers as one kernel call each; False: the kernels op by op
    (tools/bench_decode_step.py compares the two)."""

    name = "cpu"
    unrolled_layers = True  # its pass runs layer by layer on a per-layer cache (cpu_kernels.forward)

    def __init__(self, layer_kernel: bool = True):
        self.layer_kernel = layer_kernel

    def __repr__(self):
        return f"CpuKernels(layer_kernel={self.layer_kernel})"

    @classmethod
    def suits(cls, platform, mesh) -> bool:
        return platform == "cpu" and _one_device(mesh) and build.supported_cpu() and build.available()

    def check_mesh(self, mesh) -> None:
        if not _one_device(mesh):
            raise ValueError(f"the cpu attention backend runs on one CPU device, not under a mesh of {mesh.size} "
                             f"devices: use attention='xla' (or 'auto')")
        build.require()

    def attend_cached(self, q, k, v, visibility):
        B, T, H, h = q.shape
        if T == 1 and q.dtype == k.dtype == v.dtype and jnp.dtype(q.dtype).name in attention.DTYPES:
            K = k.shape[2]
            out = attention.decode_attention(q.reshape(B, K, H // K, h), k, v, visibility.mask()[:, 0])
            return out.astype(v.dtype).reshape(B, 1, H, h)
        return super().attend_cached(q, k, v, visibility)

    def uses_prepared(self, rows: int, dtype) -> bool:
        return rows <= MAX_ROWS and jnp.dtype(dtype).name in ("float32", "bfloat16")

    def prepare(self, model):
        from flax import nnx

        graphdef, state = nnx.split(model)
        weight_bytes = sum(a.nbytes for a in jax.tree.leaves(state))
        if not products.room_for_a_packed_copy(weight_bytes):
            warnings.warn("not enough free memory for a packed copy of the weights: sampling with XLA's products "
                          "(slower on the CPU)", RuntimeWarning, stacklevel=3)
            return None
        return _packer(graphdef)(state)

    def cached_forward(self, model, prepared, tokens, cache, *, prefill=False):
        if prepared is None:
            return super().cached_forward(model, prepared, tokens, cache, prefill=prefill)
        return forward.cached_forward(model, prepared, tokens, cache, prefill=prefill,
                                      attend_cached=self.attend_cached, layer_kernel=self.layer_kernel)

    def paged_forward(self, model, prepared, tokens, kv, view):
        if prepared is None or not self.layer_kernel:
            return super().paged_forward(model, prepared, tokens, kv, view)
        return forward.paged_forward(model, prepared, tokens, kv, view, self.attend_paged)

    def logits(self, model, prepared, hidden):
        if prepared is None:
            return super().logits(model, prepared, hidden)
        return forward.head_logits(model, prepared, hidden)
