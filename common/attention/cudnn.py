"""GPU attention: cuDNN's fused flash attention through `jax.nn.dot_product_attention(implementation="cudnn")`,
for training and prefill. GSPMD partitions it (JAX gives the cuDNN call partitioning rules), so it needs no
shard_map.

cuDNN masks by sequence lengths (padding after the tokens) and causality, not by a start slot. A left-padded
row is therefore rotated so that its tokens come first (row b by start[b] slots), attended causally with
length T - start[b], and rotated back: a token then sees exactly the slots `Visibility` gives it. A padding
query gets a finite value the decoder never reads (the reference gives it the mean of the values).

The kernel runs where this expresses the call and cuDNN takes it: the keys are the queries' own T slots
(S == T: training, the prefill of an empty cache), no shared prefix, float16 or bfloat16, head dim a multiple
of 8 up to 128. Else: a decode step (T = 1) runs the dense reference as `XlaAttention` does; every other call
(float32, a shared prefix, a cached prefill after earlier slots) runs `blockwise_attention`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common.attention.base import Visibility
from common.attention.blockwise import BLOCK_K, BLOCK_Q
from common.attention.kernel_backend import KernelBackend

CUDNN_DTYPES = (jnp.float16, jnp.bfloat16)


def fused_applies(q: jax.Array, k: jax.Array, visibility: Visibility, implementation: str = "cudnn") -> bool:
    """Whether `fused_attention` expresses this call (and, for "cudnn", cuDNN takes its dtype and head dim)."""
    shape_ok = q.shape[1] > 1 and q.shape[1] == k.shape[1] and visibility.prefix is None
    if implementation != "cudnn":
        return shape_ok
    h = q.shape[-1]
    return shape_ok and q.dtype in CUDNN_DTYPES and q.dtype == k.dtype and h % 8 == 0 and h <= 128


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, start: jax.Array,
                    implementation: str = "cudnn") -> jax.Array:
    """Causal self-attention of q [B, T, H, h] over k/v [B, T, K, h], row b's tokens from slot start[b] ->
    [B, T, H, h], by `jax.nn.dot_product_attention` (implementation "cudnn"; "xla" runs the same call
    through XLA, which is how CPU tests check the rotation and the lengths)."""
    T = q.shape[1]
    shift = (jnp.arange(T, dtype=jnp.int32)[None, :] + start[:, None]) % T  # rotated slot t holds slot t + start
    unshift = (jnp.arange(T, dtype=jnp.int32)[None, :] - start[:, None]) % T
    rotate = lambda x, index: jnp.take_along_axis(x, index[:, :, None, None], axis=1)  # noqa: E731
    lengths = jnp.maximum(T - start, 1).astype(jnp.int32)  # a row of padding only: any finite value
    out = jax.nn.dot_product_attention(rotate(q, shift), rotate(k, shift), rotate(v, shift), is_causal=True,
                                       query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                       implementation=implementation)
    return rotate(out, unshift)


class CudnnAttention(KernelBackend):
    """`fused_attention` where it applies (`fused_applies`), else the XLA paths (module docstring).
    implementation: "cudnn", or "xla" for the same call through XLA (tests on CPU). block_q, block_k: the
    blockwise fallback's tiles."""

    name = "cudnn"

    def __init__(self, implementation: str = "cudnn", block_q: int = BLOCK_Q, block_k: int = BLOCK_K):
        self.implementation, self.block_q, self.block_k = implementation, block_q, block_k

    @classmethod
    def suits(cls, platform, mesh) -> bool:
        return platform == "gpu"

    def kernel_applies(self, q, k, visibility: Visibility) -> bool:
        return fused_applies(q, k, visibility, self.implementation)

    def kernel(self, q, k, v, start):
        return fused_attention(q, k, v, start, self.implementation)

    def __repr__(self):
        return f"CudnnAttention(implementation={self.implementation!r})"
