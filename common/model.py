"""The one decoder: Qwen2 / Qwen2.5 (q/k/v biases) and Llama-architecture checkpoints (no biases).

Grouped-query attention, RoPE (rotate-half layout, as transformers), RMSNorm, SwiGLU MLP, tied or untied
embeddings. Every parameter carries logical axis names (`common.sharding.LOGICAL_RULES` maps them to the
mesh). Shapes: B batch, T query length, S key/cache length, d hidden, H heads, K kv heads, G = H/K,
h head dim, F intermediate, V vocab.

Sequences may be left-padded: `start[b]` is the cache slot of sequence b's first real token. The token in
slot s has RoPE position s - start[b], and attends to slots start[b] <= s' <= s. A cache may also hold a
prefix that the sampler prefilled once for several sequences: slots 0..prefix[b]-1 of sequence b, seen by
every query of b; b's own tokens then start at slot start[b], with positions prefix[b] + s - start[b].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from common.config import ModelConfig
from common.kernels import cpu_attention, cpu_layer, cpu_memory, cpu_products
from common.sharding import constrain

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


def as_dtype(dtype: Any) -> jnp.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        return jnp.dtype(DTYPES[dtype])
    return jnp.dtype(dtype)


def _param(rngs: nnx.Rngs | None, shape, axes, dtype, init: str = "normal") -> nnx.Param:
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = (0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=tuple(axes))


# ---- KV cache -------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Static-size key/value cache, heads before slots so attention reads it as it lies (no per-step
    transpose). k[i]: [B, K, h, S] for layer i, keys transposed, so that the scores q.k are a plain
    matrix product (XLA:CPU's product with a transposed right side took twice as long as the whole
    probs.v product); v[i]: [B, K, S, h]. index: slots written so far (the same for every sequence: prompts
    are left-padded); start: [B] slot of each sequence's first token after its shared prefix; prefix: [B]
    length of the shared prefix in slots 0.. (0: none)."""

    K_SLOT_AXIS = 3  # the slot axis of k[i]
    V_SLOT_AXIS = 2  # the slot axis of v[i]

    k: list[jax.Array]
    v: list[jax.Array]
    index: jax.Array  # int32 scalar
    start: jax.Array  # int32 [B]
    prefix: jax.Array  # int32 [B]

    @property
    def max_length(self) -> int:
        return self.v[0].shape[self.V_SLOT_AXIS]

    @classmethod
    def zeros(cls, config: ModelConfig, batch: int, max_length: int, dtype, start=None, prefix=None) -> "KVCache":
        k_shape = (batch, config.num_kv_heads, config.head_dim, max_length)
        v_shape = (batch, config.num_kv_heads, max_length, config.head_dim)
        zeros_k = lambda: constrain(jnp.zeros(k_shape, dtype), ("batch", "act_kv_heads", None, "cache_length"))
        zeros_v = lambda: constrain(jnp.zeros(v_shape, dtype), ("batch", "act_kv_heads", "cache_length", None))
        start = jnp.zeros((batch,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
        prefix = jnp.zeros((batch,), jnp.int32) if prefix is None else jnp.asarray(prefix, jnp.int32)
        return cls(k=[zeros_k() for _ in range(config.num_layers)], v=[zeros_v() for _ in range(config.num_layers)],
                   index=jnp.zeros((), jnp.int32), start=start, prefix=prefix)


# ---- pure building blocks -------------------------------------------------------------------------


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm computed in float32, cast back to x's dtype before the scale (as transformers)."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * x32.astype(x.dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """positions [B, T] int -> cos, sin [B, T, h] float32 (rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, h/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, N, h]; cos/sin [B, T, h]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def attention_mask(query_slots: jax.Array, key_length: int, start: jax.Array, prefix=None) -> jax.Array:
    """query_slots [T] int, start [B], prefix [B] or None -> bool [B, T, S]: key slot s visible iff
    start[b] <= s <= slot(t), or s < prefix[b] (a shared prefix)."""
    keys = jnp.arange(key_length)[None, None, :]
    visible = (keys <= query_slots[None, :, None]) & (keys >= start[:, None, None])
    return visible if prefix is None else visible | (keys < prefix[:, None, None])


def product(x: jax.Array, kernel: jax.Array, contract: int, sampling: bool, transposed: bool = False,
            out_dtype=None, panels: jax.Array | None = None) -> jax.Array:
    """x [..., c...] . kernel [c..., n...] -> [..., n...] in out_dtype (default x's): the last `contract` axes
    of x against the first of kernel (transposed: kernel [n, c] with contract 1, the head read from a tied
    embedding).

    When sampling (under a KV cache, never differentiated) it accumulates in float32 and rounds once: XLA:CPU
    runs bf16 x bf16 -> f32 products in its fast kernels, bf16 -> bf16 ones ~1.6x slower. `panels`: the same
    kernel packed for our CPU kernels (`Decoder.decode_panels`); the product then runs on them. Training keeps
    plain products, whose transposes stay in the compute dtype."""
    if transposed and contract != 1:
        raise ValueError(f"a transposed kernel contracts one axis, got contract={contract}")
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    kernel_axes = (1,) if transposed else tuple(range(contract))
    dims = ((tuple(range(x.ndim - contract, x.ndim)), kernel_axes), ((), ()))
    if not sampling:
        return jax.lax.dot_general(x, kernel, dims, preferred_element_type=None if out_dtype == x.dtype else out_dtype)
    lead = x.shape[:x.ndim - contract]
    if panels is not None:
        out_shape = kernel.shape[:1] if transposed else kernel.shape[contract:]
        out = cpu_products.packed_matmul(x.reshape(math.prod(lead), -1), panels, math.prod(out_shape))
        return out.reshape(*lead, *out_shape).astype(out_dtype)
    return jax.lax.dot_general(x, kernel, dims, preferred_element_type=jnp.float32).astype(out_dtype)


def write_slots(cache: jax.Array, new: jax.Array, axis: int, index) -> jax.Array:
    """cache with `new` written at slot `index` of `axis` (a dynamic-update-slice), in the cache's dtype.

    On the CPU (no mesh) our kernel writes just those slots, in place (`common.kernels.cpu_memory`): XLA:CPU
    rewrote the whole key cache, whose slot axis is the minor one (and for bf16 widened it to float32, 6.1 of
    ~43 ms a step at batch 8). Elsewhere the plain update, which stays in place."""
    new = new.astype(cache.dtype)
    if cpu_memory.routed():
        return cpu_memory.write_slots(cache, new, axis, index)
    return jax.lax.dynamic_update_slice(cache, new, tuple(index if a == axis else 0 for a in range(cache.ndim)))


def take_rows(table: jax.Array, ids: jax.Array, sampling: bool = False) -> jax.Array:
    """table[ids] along axis 0 (an embedding lookup). When sampling (under a cache: never differentiated) on the
    CPU (no mesh), our kernel copies the rows: XLA:CPU converted (or copied) a whole bf16 table to gather from
    it, once per sampler call (59 ms and 113 MB for SmolLM2's embedding). Otherwise a plain gather."""
    if sampling and cpu_memory.routed():
        return cpu_memory.take_rows(table, ids)
    return jnp.take(table, ids, axis=0)


def gqa_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, sampling: bool = False) -> jax.Array:
    """q [B, T, H, h], k [B, K, h, S], v [B, K, S, h], mask [B, T, S] -> [B, T, H, h]. Softmax in float32.
    A decode step (sampling, T = 1) on the CPU runs on our kernel (`common.kernels.cpu_attention`).

    The G = H/K query heads of a group and the T queries form the rows of one matrix per (b, k), so both
    products are plain batched matmuls over k and v in their stored layout (only q and the output move)."""
    B, T, H, h = q.shape
    K = k.shape[1]
    G = H // K
    if sampling and T == 1 and q.dtype == k.dtype == v.dtype and cpu_attention.routed(v.dtype):
        out = cpu_attention.decode_attention(q.reshape(B, K, G, h), k, v, mask[:, 0])
        return out.astype(v.dtype).reshape(B, 1, H, h)
    q = q.reshape(B, T, K, G, h).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, h)
    scores = jnp.einsum("bkqh,bkhs->bkqs", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(h).astype(
        jnp.float32)
    scores = scores.reshape(B, K, G, T, -1)
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(B, K, G * T, -1)
    out = jnp.einsum("bkqs,bksh->bkqh", probs, v, preferred_element_type=jnp.float32 if sampling else None)
    out = out.astype(v.dtype)
    return out.reshape(B, K, G, T, h).transpose(0, 3, 1, 2, 4).reshape(B, T, H, h)


# ---- modules --------------------------------------------------------------------------------------


class Attention(nnx.Module):
    """q, k and v come from one fused kernel [d, K, G + 2, h]: for each kv head, its G query heads, its key
    and its value. A tensor-parallel shard over K holds whole groups: the G query heads next to the key and
    value they attend with. Query head k * G + g is HF's head k * G + g.

    A decode step (one token per row) runs one product for q/k/v, not three: XLA:CPU's decode is bound by
    the number and size of its small products. Over many tokens (prefill, training) each part runs on its
    own slice of the kernel: slicing the fused output would hold it and its slices at once, which took 5 GiB
    more per device (66.3 against 61.1 GiB) in the compiled GRPO update of Qwen2.5-7B (docs/memory_plan.md).
    With packed weights (our CPU kernels, sampling only) the prefill runs the one product too. The MLP does the
    same."""

    def __init__(self, cfg: ModelConfig, param_dtype, rngs: nnx.Rngs):
        d, H, K, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        G = H // K
        self.qkv_kernel = _param(rngs, (d, K, G + 2, h), ("embed", "kv_heads", None, "head_dim"), param_dtype)
        self.o_kernel = _param(rngs, (H, h, d), ("heads", "head_dim", "embed"), param_dtype)
        if cfg.attention_bias:
            self.qkv_bias = _param(rngs, (K, G + 2, h), ("kv_heads", None, "head_dim"), param_dtype, "zeros")
        self.use_bias = cfg.attention_bias

    def __call__(self, x, cos, sin, mask, layer_cache, cache_index, dtype, attend_fresh_only=False, panels=None):
        """x [B, T, d] -> ([B, T, d], (k, v) updated layer cache or the fresh k, v [B, K, T, h]).

        attend_fresh_only: attend to the T new keys only, not the whole cache (prefill of an empty cache:
        the same result, without scores over the empty slots). panels: this layer's packed kernels
        (`Decoder.decode_panels`), under a cache."""
        panels = panels or {}
        B, T, _ = x.shape
        sampling = layer_cache is not None
        kernel = self.qkv_kernel[...].astype(dtype)
        bias = self.qkv_bias[...].astype(dtype) if self.use_bias else None
        G = kernel.shape[2] - 2
        if T == 1 or "qkv" in panels:  # a decode step, or packed weights (CPU sampling): one product
            qkv = product(x, kernel, 1, sampling, panels=panels.get("qkv"))
            qkv = qkv if bias is None else qkv + bias
            q, k, v = qkv[:, :, :, :G], qkv[:, :, :, G], qkv[:, :, :, G + 1]
        else:  # many tokens: one product per part (see the class docstring)
            q, k, v = (product(x, kernel[:, :, part], 1, sampling) + (0 if bias is None else bias[:, part])
                       for part in (slice(0, G), G, G + 1))
        q = q.reshape(B, T, -1, kernel.shape[-1])
        q = constrain(apply_rope(q, cos, sin), ("batch", "length", "act_heads", None))
        # keys and values as the cache holds them: k [B, K, h, T], v [B, K, T, h]
        k = constrain(apply_rope(k, cos, sin).transpose(0, 2, 3, 1), ("batch", "act_kv_heads", None, "length"))
        v = constrain(v.transpose(0, 2, 1, 3), ("batch", "act_kv_heads", "length", None))
        new_cache = (k, v)
        if layer_cache is not None:
            k_cache, v_cache = layer_cache
            new_cache = (write_slots(k_cache, k, KVCache.K_SLOT_AXIS, cache_index),
                         write_slots(v_cache, v, KVCache.V_SLOT_AXIS, cache_index))
            if not attend_fresh_only:
                k, v = new_cache
        out = gqa_attention(q, k.astype(dtype), v.astype(dtype), mask, sampling)
        out = product(out, self.o_kernel[...].astype(dtype), 2, sampling, panels=panels.get("o"))
        return out, new_cache


class MLP(nnx.Module):
    """SwiGLU with gate and up in one kernel [d, 2, F], then down [F, d]. As in `Attention`: one product for
    gate/up in a decode step, one per part over many tokens."""

    def __init__(self, cfg: ModelConfig, param_dtype, rngs: nnx.Rngs):
        d, F = cfg.hidden_size, cfg.intermediate_size
        self.gate_up_kernel = _param(rngs, (d, 2, F), ("embed", None, "mlp"), param_dtype)
        self.down_kernel = _param(rngs, (F, d), ("mlp", "embed"), param_dtype)

    def __call__(self, x, dtype, sampling=False, panels=None):
        """sampling, panels: as in `Attention`."""
        panels = panels or {}
        kernel = self.gate_up_kernel[...].astype(dtype)
        if x.shape[1] == 1 or "gate_up" in panels:  # as in `Attention`
            gate_up = product(x, kernel, 1, sampling, panels=panels.get("gate_up"))
            gate, up = gate_up[:, :, 0], gate_up[:, :, 1]
        else:  # many tokens: one product per part
            gate, up = (product(x, kernel[:, part], 1, sampling) for part in (0, 1))
        hidden = constrain(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"))
        return product(hidden, self.down_kernel[...].astype(dtype), 1, sampling, panels=panels.get("down"))


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, param_dtype, rngs: nnx.Rngs):
        self.attn_norm = _param(rngs, (cfg.hidden_size,), ("norm",), param_dtype, "ones")
        self.attn = Attention(cfg, param_dtype, rngs)
        self.mlp_norm = _param(rngs, (cfg.hidden_size,), ("norm",), param_dtype, "ones")
        self.mlp = MLP(cfg, param_dtype, rngs)
        self.eps = cfg.rms_norm_eps

    def __call__(self, x, cos, sin, mask, layer_cache, cache_index, dtype, attend_fresh_only=False, panels=None):
        if (panels is not None and layer_cache is not None and x.shape[1] == 1 and not attend_fresh_only
                and cpu_layer.routed(dtype, layer_cache[0].dtype, cos.shape[-1])):
            return self.decode_step_on_kernel(x, cos, sin, mask, layer_cache, cache_index, dtype, panels)
        attn_out, new_cache = self.attn(rms_norm(x, self.attn_norm[...], self.eps), cos, sin, mask,
                                        layer_cache, cache_index, dtype, attend_fresh_only, panels)
        x = x + attn_out
        x = x + self.mlp(rms_norm(x, self.mlp_norm[...], self.eps), dtype, sampling=layer_cache is not None,
                         panels=panels)
        return constrain(x, ("batch", "length", "act_embed")), new_cache

    def decode_step_on_kernel(self, x, cos, sin, mask, layer_cache, cache_index, dtype, panels):
        """The same layer for one token per row under a cache, as one call of our CPU kernel
        (`common.kernels.cpu_layer`): x [B, 1, d] -> ([B, 1, d], (k, v) the cache with slot cache_index written)."""
        attn = self.attn
        bias = (attn.qkv_bias[...] if attn.use_bias
                else jnp.zeros(attn.qkv_kernel.shape[1:], attn.qkv_kernel.dtype))
        out, k, v = cpu_layer.decode_layer(
            x[:, 0].astype(dtype), self.attn_norm[...], bias, self.mlp_norm[...], panels, cos[:, 0], sin[:, 0],
            *layer_cache, cache_index, mask[:, 0], eps=self.eps, intermediate=self.mlp.down_kernel.shape[0])
        return out[:, None], (k, v)


class Decoder(nnx.Module):
    """The causal LM. `model(tokens)` -> logits [B, T, V] float32 (no padding, no cache).

    `model.forward(tokens, start=..., cache=...)` is the general call used by the sampler and trainers.
    """

    def __init__(self, config: ModelConfig, *, dtype="float32", param_dtype="float32",
                 rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype = as_dtype(dtype)
        pdt = as_dtype(param_dtype)
        self.embedding = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"), pdt)
        self.layers = nnx.List([Block(config, pdt, rngs) for _ in range(config.num_layers)])
        self.final_norm = _param(rngs, (config.hidden_size,), ("norm",), pdt, "ones")
        if not config.tie_embeddings:
            self.lm_head = _param(rngs, (config.hidden_size, config.vocab_size), ("embed", "vocab"), pdt)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        logits, _ = self.forward(jnp.asarray(tokens, jnp.int32))
        return logits

    def forward(self, tokens: jax.Array, *, start: jax.Array | None = None, cache: KVCache | None = None,
                return_hidden: bool = False, remat: bool = False, prefill: bool = False, panels=None):
        """tokens [B, T] int32 -> (logits [B, T, V] float32 | final hidden [B, T, d], new cache | None).

        Without a cache the tokens occupy slots 0..T-1; with one they are written at slots
        cache.index..cache.index+T-1 and cache.start replaces `start`. `start` [B]: first real slot.
        prefill=True promises an empty cache (index 0, no prefix): attention then spans the T new slots only.
        panels: the weights packed for our CPU kernels (`decode_panels`), used under a cache.
        """
        B, T = tokens.shape
        if cache is not None:
            start, index, prefix = cache.start, cache.index, cache.prefix
            key_length = T if prefill else cache.max_length
        else:
            start = jnp.zeros((B,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
            index, prefix, key_length = jnp.zeros((), jnp.int32), None, T
        slots = index + jnp.arange(T, dtype=jnp.int32)
        positions = jnp.maximum(slots[None, :] - start[:, None], 0)
        if prefix is not None:
            positions = positions + prefix[:, None]
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        mask = attention_mask(slots, key_length, start, prefix)

        x = take_rows(self.embedding[...], tokens, sampling=cache is not None).astype(self.dtype)
        x = constrain(x, ("batch", "length", "act_embed"))
        new_k, new_v = [], []
        for i, block in enumerate(self.layers):
            layer_cache = (cache.k[i], cache.v[i]) if cache is not None else None
            call = nnx.remat(Block.__call__, static_argnums=(7, 8)) if remat else Block.__call__
            x, (k, v) = call(block, x, cos, sin, mask, layer_cache, index, self.dtype, prefill,
                             None if panels is None else panels["layers"][i])
            new_k.append(k)
            new_v.append(v)
        x = rms_norm(x, self.final_norm[...], self.config.rms_norm_eps)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=new_k, v=new_v, index=index + T, start=start, prefix=prefix)
        if return_hidden:
            return x, new_cache
        return self.logits(x, sampling=cache is not None, panels=panels), new_cache

    def logits(self, hidden: jax.Array, sampling: bool = False, panels=None) -> jax.Array:
        """hidden [..., d] -> logits [..., V] float32. sampling: as in `product`; panels: as in `forward`."""
        tied = self.config.tie_embeddings
        head = (self.embedding if tied else self.lm_head)[...].astype(self.dtype)
        out = product(hidden, head, 1, sampling, transposed=tied, out_dtype=jnp.float32,
                      panels=None if panels is None else panels["head"])
        return constrain(out, ("batch", "length", "act_vocab")) if out.ndim == 3 else out

    def decode_panels(self) -> dict:
        """Every weight of a forward pass, in the compute dtype, packed for our CPU kernels
        (`common.kernels.cpu_products`): {"layers": [{"qkv", "o", "gate_up", "down"}...], "head"}. A packed
        copy of the weights, which `forward(..., panels=...)` reads under a cache; the sampler packs once per
        parameter version where its calls run on the kernels (`cpu_products.routed`)."""
        def packed(param, contract=1):  # the kernel as the 2-D [contracted, out] matrix it is in a product
            w = param[...].astype(self.dtype)
            return cpu_products.pack(w.reshape(math.prod(w.shape[:contract]), -1))

        layers = [{"qkv": packed(b.attn.qkv_kernel), "o": packed(b.attn.o_kernel, 2),
                   "gate_up": packed(b.mlp.gate_up_kernel), "down": packed(b.mlp.down_kernel)} for b in self.layers]
        tied = self.config.tie_embeddings
        head = cpu_products.pack((self.embedding if tied else self.lm_head)[...].astype(self.dtype), transposed=tied)
        return {"layers": layers, "head": head}


def abstract_decoder(config: ModelConfig, dtype="float32", param_dtype="float32") -> Decoder:
    """The decoder's structure with ShapeDtypeStruct leaves: no memory is allocated."""
    return nnx.eval_shape(lambda: Decoder(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
