"""What a backend built on a fused kernel shares: the kernel for the calls it expresses, the XLA paths for
the rest (a decode step the dense product, as `XlaAttention` runs it; any other call `blockwise_attention`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common.attention.base import AttentionBackend, Visibility
from common.attention.blockwise import BLOCK_K, BLOCK_Q, blockwise_attention
from common.attention.xla import XlaAttention


class KernelBackend(AttentionBackend):
    """Subclasses say which calls their kernel takes (`kernel_applies`) and run it (`kernel`): causal
    self-attention over the queries' own slots, row b's tokens from slot start[b]. block_q, block_k: the
    blockwise fallback's tiles (class defaults; a subclass may take them as arguments)."""

    block_q, block_k = BLOCK_Q, BLOCK_K

    def kernel_applies(self, q: jax.Array, k: jax.Array, visibility: Visibility) -> bool:
        raise NotImplementedError

    def kernel(self, q: jax.Array, k: jax.Array, v: jax.Array, start: jax.Array) -> jax.Array:
        """q [B, T, H, h], k/v [B, T, K, h], start [B] int32 -> [B, T, H, h]."""
        raise NotImplementedError

    def attend(self, q, k, v, visibility: Visibility):
        if self.kernel_applies(q, k, visibility):
            return self.kernel(q, k, v, visibility.start.astype(jnp.int32)).astype(v.dtype)
        return blockwise_attention(q, k, v, visibility, self.block_q, self.block_k)

    def attend_cached(self, q, k, v, visibility: Visibility):
        if q.shape[1] == 1:  # a decode step: [B, H, 1, S] scores, as the XLA backend computes them
            return XlaAttention().attend_cached(q, k, v, visibility)
        return self.attend(q, k, v, visibility)
