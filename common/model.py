"""The one decoder: Qwen2 / Qwen2.5 (q/k/v biases) and Llama-architecture checkpoints (no biases).

Grouped-query attention, RoPE (rotate-half layout, as transformers), RMSNorm, SwiGLU MLP, tied or untied
embeddings. Every parameter carries logical axis names (`common.sharding.LOGICAL_RULES` maps them to the
mesh). Attention itself is the decoder's backend's (`common.attention`: a config key picks it; "xla" is the
reference); the KV cache, its layout and where tokens sit in it are `common.kv_cache`'s. Shapes: B batch,
T query length, S key/cache length, d hidden, H heads, K kv heads, G = H/K, h head dim, F intermediate,
V vocab.

The building blocks (`rms_norm`, `rope_cos_sin`, `apply_rope`, `product`, `swiglu`) are public pure
functions: a backend that runs a whole cached pass its own way composes the same layer from them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from common.attention import AttentionBackend, Visibility, select_backend
from common.config import ModelConfig
from common.kv_cache import KVCache, layer_slots, token_placement, write_slots
from common.paged_kv import PagedKV, PagedLayer, PageView, write_pages
from common.sharding import constrain

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


def as_dtype(dtype: Any) -> jnp.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        return jnp.dtype(DTYPES[dtype])
    return jnp.dtype(dtype)


def _param(rngs: nnx.Rngs | None, shape, axes, dtype, init: str = "normal", layers: int | None = None) -> nnx.Param:
    """A parameter of `shape` with logical `axes`; layers: stacked, one per layer, on a leading "layers" axis."""
    if layers is not None:
        shape, axes = (layers, *shape), ("layers", *axes)
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros":
        value = jnp.zeros(shape, dtype)
    else:
        value = (0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=tuple(axes))


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


def swiglu(gate: jax.Array, up: jax.Array) -> jax.Array:
    return jax.nn.silu(gate) * up


def product(x: jax.Array, kernel: jax.Array, contract: int, sampling: bool, transposed: bool = False,
            out_dtype=None) -> jax.Array:
    """x [..., c...] . kernel [c..., n...] -> [..., n...] in out_dtype (default x's): the last `contract` axes
    of x against the first of kernel (transposed: kernel [n, c] with contract 1, the head read from a tied
    embedding).

    When sampling (under a KV cache, never differentiated) it accumulates in float32 and rounds once, so a
    bfloat16 decoder's log-probs see one rounding per product. Training keeps products in the compute
    dtype, whose transposes then stay in it too."""
    if transposed and contract != 1:
        raise ValueError(f"a transposed kernel contracts one axis, got contract={contract}")
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    kernel_axes = (1,) if transposed else tuple(range(contract))
    dims = ((tuple(range(x.ndim - contract, x.ndim)), kernel_axes), ((), ()))
    if not sampling:
        return jax.lax.dot_general(x, kernel, dims, preferred_element_type=None if out_dtype == x.dtype else out_dtype)
    return jax.lax.dot_general(x, kernel, dims, preferred_element_type=jnp.float32).astype(out_dtype)


# ---- modules --------------------------------------------------------------------------------------


class Attention(nnx.Module):
    """q, k and v come from one fused kernel [d, K, G + 2, h]: for each kv head, its G query heads, its key
    and its value. A tensor-parallel shard over K holds whole groups: the G query heads next to the key and
    value they attend with. Query head k * G + g is HF's head k * G + g.

    A decode step (one token per row) runs one product for q/k/v, not three: a step is bound by the number of
    its small products. Over many tokens (prefill, training) each part runs on its own slice of the kernel:
    slicing the fused output would hold it and its slices at once, which took 5 GiB more per device (66.3
    against 61.1 GiB) in the compiled GRPO update of Qwen2.5-7B (docs/memory_plan.md). The MLP does the same."""

    def __init__(self, cfg: ModelConfig, param_dtype, rngs: nnx.Rngs, layers: int | None = None):
        d, H, K, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        G = H // K
        self.qkv_kernel = _param(rngs, (d, K, G + 2, h), ("embed", "kv_heads", None, "head_dim"), param_dtype,
                                 layers=layers)
        self.o_kernel = _param(rngs, (H, h, d), ("heads", "head_dim", "embed"), param_dtype, layers=layers)
        if cfg.attention_bias:
            self.qkv_bias = _param(rngs, (K, G + 2, h), ("kv_heads", None, "head_dim"), param_dtype, "zeros",
                                   layers=layers)
        self.use_bias = cfg.attention_bias

    def __call__(self, x, cos, sin, visibility: Visibility, layer_cache, cache_index, dtype,
                 backend: AttentionBackend, attend_fresh_only=False):
        """x [B, T, d] -> ([B, T, d], (k, v) the cache's stores with this layer's T slots written, or the fresh
        k, v [B, T, K, h] without a cache).

        layer_cache: None, or (k store, v store, layer): a layer's own [B, S, K, h] (layer None) or every
        layer's [L, B, S, K, h] and this layer's index in it (`common.kv_cache.write_slots`); or a
        `common.paged_kv.PagedLayer`: the engine's paged cache.
        attend_fresh_only: attend to the T new keys only, not the whole cache (prefill of an empty cache:
        the same result, without scores over the empty slots)."""
        B, T, _ = x.shape
        sampling = layer_cache is not None
        kernel = self.qkv_kernel[...].astype(dtype)
        bias = self.qkv_bias[...].astype(dtype) if self.use_bias else None
        G = kernel.shape[2] - 2
        if T == 1:  # a decode step: one product
            qkv = product(x, kernel, 1, sampling)
            qkv = qkv if bias is None else qkv + bias
            q, k, v = qkv[:, :, :, :G], qkv[:, :, :, G], qkv[:, :, :, G + 1]
        else:  # many tokens: one product per part (see the class docstring)
            q, k, v = (product(x, kernel[:, :, part], 1, sampling) + (0 if bias is None else bias[:, part])
                       for part in (slice(0, G), G, G + 1))
        q = q.reshape(B, T, -1, kernel.shape[-1])
        q = constrain(apply_rope(q, cos, sin), ("batch", "length", "act_heads", None))
        k = constrain(apply_rope(k, cos, sin), ("batch", "length", "act_kv_heads", None))
        v = constrain(v, ("batch", "length", "act_kv_heads", None))
        if layer_cache is None:
            new_cache = (k, v)
            out = backend.attend(q, k, v, visibility)
        elif isinstance(layer_cache, PagedLayer):
            k_pool, v_pool, layer, view = layer_cache.k, layer_cache.v, layer_cache.layer, layer_cache.view
            new_cache = (write_pages(k_pool, k, layer, view), write_pages(v_pool, v, layer, view))
            out = backend.attend_paged(q, *new_cache, layer, view)
        else:
            k_store, v_store, layer = layer_cache
            new_cache = (write_slots(k_store, k, cache_index, layer), write_slots(v_store, v, cache_index, layer))
            if not attend_fresh_only:
                k, v = (layer_slots(store, layer) for store in new_cache)
            out = backend.attend_cached(q, k.astype(dtype), v.astype(dtype), visibility)
        out = product(out.astype(dtype), self.o_kernel[...].astype(dtype), 2, sampling)
        return out, new_cache


class MLP(nnx.Module):
    """SwiGLU with gate and up in one kernel [d, 2, F], then down [F, d]. As in `Attention`: one product for
    gate/up in a decode step, one per part over many tokens."""

    def __init__(self, cfg: ModelConfig, param_dtype, rngs: nnx.Rngs, layers: int | None = None):
        d, F = cfg.hidden_size, cfg.intermediate_size
        self.gate_up_kernel = _param(rngs, (d, 2, F), ("embed", None, "mlp"), param_dtype, layers=layers)
        self.down_kernel = _param(rngs, (F, d), ("mlp", "embed"), param_dtype, layers=layers)

    def __call__(self, x, dtype, sampling=False):
        """sampling: as in `product`."""
        kernel = self.gate_up_kernel[...].astype(dtype)
        if x.shape[1] == 1:  # as in `Attention`
            gate_up = product(x, kernel, 1, sampling)
            gate, up = gate_up[:, :, 0], gate_up[:, :, 1]
        else:  # many tokens: one product per part
            gate, up = (product(x, kernel[:, part], 1, sampling) for part in (0, 1))
        hidden = constrain(swiglu(gate, up), ("batch", "length", "act_mlp"))
        return product(hidden, self.down_kernel[...].astype(dtype), 1, sampling)


class Block(nnx.Module):
    """One decoder layer. layers=L: the parameters of L layers stacked on a leading axis (the decoder's
    `layers`); a `Block` that runs holds one layer's (`Decoder.block`, or a slice inside the layer scan)."""

    def __init__(self, cfg: ModelConfig, param_dtype, rngs: nnx.Rngs, layers: int | None = None):
        self.attn_norm = _param(rngs, (cfg.hidden_size,), ("norm",), param_dtype, "ones", layers=layers)
        self.attn = Attention(cfg, param_dtype, rngs, layers)
        self.mlp_norm = _param(rngs, (cfg.hidden_size,), ("norm",), param_dtype, "ones", layers=layers)
        self.mlp = MLP(cfg, param_dtype, rngs, layers)
        self.eps = cfg.rms_norm_eps

    def __call__(self, x, cos, sin, visibility, layer_cache, cache_index, dtype, backend, attend_fresh_only=False):
        attn_out, new_cache = self.attn(rms_norm(x, self.attn_norm[...], self.eps), cos, sin, visibility,
                                        layer_cache, cache_index, dtype, backend, attend_fresh_only)
        x = x + attn_out
        x = x + self.mlp(rms_norm(x, self.mlp_norm[...], self.eps), dtype, sampling=layer_cache is not None)
        return constrain(x, ("batch", "length", "act_embed")), new_cache


REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole layer in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,  # keep every product's output, recompute the rest
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep weight products only
}


def remat_policy(remat: bool | str | None):
    """A `model.remat` setting -> the checkpoint policy of a layer in the backward pass, None for no remat:
    False / "none" keep every activation; True / "full" recompute the layer; "dots", "dots_no_batch": keep
    some products (`REMAT_POLICIES`)."""
    if remat in (None, False, "none", ""):
        return None
    if remat is True:
        remat = "full"
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose False/'none', True/'full' or one of "
                         f"{sorted(REMAT_POLICIES)}")
    return REMAT_POLICIES[remat]


class Decoder(nnx.Module):
    """The causal LM. `model(tokens)` -> logits [B, T, V] float32 (no padding, no cache).

    `model.forward(tokens, start=..., cache=...)` is the general call used by the sampler and trainers.
    `attention`: the attention backend (`common.attention.select_backend`: a name, "auto" meaning no mesh,
    or a backend already selected for a mesh); `model.backend` holds it.

    The layers' parameters are stacked, [L, ...] on a leading "layers" axis (`layers`, one `Block`), and
    the forward pass runs them as one `jax.lax.scan`: one layer's program, compiled once, whatever the depth.
    Under a KV cache, scan_layers=False runs them as an unrolled loop over their slices instead (what a backend
    that runs its own per-layer cached pass wants, `AttentionBackend.unrolled_layers`; None picks from the
    backend), and the cache follows: one [L, B, S, K, h] array per k and v when scanning, a list of per-layer
    arrays when unrolled (`new_cache`). Without a cache (training, log-probs) the layers always scan: on the
    CPU as fast as unrolled, and the SmolLM2 update compiled in 23 s instead of 33.
    """

    def __init__(self, config: ModelConfig, *, dtype="float32", param_dtype="float32",
                 rngs: nnx.Rngs | None = None, attention: str | AttentionBackend = "xla",
                 scan_layers: bool | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype = as_dtype(dtype)
        self.use_backend(attention, scan_layers)
        pdt = as_dtype(param_dtype)
        self.embedding = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"), pdt)
        self.layers = Block(config, pdt, rngs, layers=config.num_layers)
        self.final_norm = _param(rngs, (config.hidden_size,), ("norm",), pdt, "ones")
        if not config.tie_embeddings:
            self.lm_head = _param(rngs, (config.hidden_size, config.vocab_size), ("embed", "vocab"), pdt)

    def use_backend(self, attention: str | AttentionBackend, scan_layers: bool | None = None) -> None:
        """Runs attention on `attention` (as in the constructor) from now on; scan_layers None: as it wants."""
        self.backend = select_backend(attention)
        self.scan_layers = (not self.backend.unrolled_layers) if scan_layers is None else bool(scan_layers)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        logits, _ = self.forward(jnp.asarray(tokens, jnp.int32))
        return logits

    def block(self, i: int) -> Block:
        """Layer i as a `Block` of its own (its slice of the stacked parameters)."""
        graphdef, state = nnx.split(self.layers)
        return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))

    def new_cache(self, batch: int, max_length: int, start=None, prefix=None) -> KVCache:
        """An empty KV cache for this decoder: compute dtype, stacked when the layers scan."""
        return KVCache.zeros(self.config, batch, max_length, self.dtype, start=start, prefix=prefix,
                             stacked=self.scan_layers)

    def forward(self, tokens: jax.Array, *, start: jax.Array | None = None, cache: KVCache | None = None,
                return_hidden: bool = False, remat: bool | str = False, prefill: bool = False):
        """tokens [B, T] int32 -> (logits [B, T, V] float32 | final hidden [B, T, d], new cache | None).

        Without a cache the tokens occupy slots 0..T-1; with one they are written at slots
        cache.index..cache.index+T-1 and cache.start replaces `start`. `start` [B]: first real slot.
        prefill=True promises an empty cache (index 0, no prefix): attention then spans the T new slots only.
        remat: the backward pass's recomputation of each layer (`remat_policy`).
        """
        B, T = tokens.shape
        if cache is not None:
            index = cache.index
            positions, visibility = cache.placement(T, prefill)
        else:
            start = jnp.zeros((B,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
            index = jnp.zeros((), jnp.int32)
            positions, visibility = token_placement(index, T, start, None, T)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)

        x = jnp.take(self.embedding[...], tokens, axis=0).astype(self.dtype)
        x = constrain(x, ("batch", "length", "act_embed"))
        graphdef, stacked = nnx.split(self.layers)

        def layer(block_state, x, layer_cache):
            block = nnx.merge(graphdef, block_state)
            return block(x, cos, sin, visibility, layer_cache, index, self.dtype, self.backend, prefill)

        scan = self.scan_layers or cache is None  # without a cache the layers always scan
        policy = remat_policy(remat)
        if policy is not None:  # CSE across a scan's iterations is no risk; in an unrolled loop it would undo remat
            layer = jax.checkpoint(layer, policy=policy, prevent_cse=not scan)
        stores = None if cache is None else (cache.k, cache.v)
        if scan:
            if cache is not None and cache.per_layer:
                raise ValueError("a decoder that scans its layers takes a stacked cache (model.new_cache)")

            def body(carry, xs):
                x, stores = carry
                block_state, i = xs
                x, new = layer(block_state, x, None if stores is None else (*stores, i))
                return (x, None if stores is None else new), None

            layer_ids = jnp.arange(self.config.num_layers, dtype=jnp.int32)
            (x, stores), _ = jax.lax.scan(body, (x, stores), (stacked, layer_ids))
        else:
            if cache is not None and not cache.per_layer:
                raise ValueError("a decoder with unrolled layers takes a per-layer cache (model.new_cache)")
            new_k, new_v = [], []
            for i in range(self.config.num_layers):
                block_state = jax.tree.map(lambda a: a[i], stacked)
                x, (k, v) = layer(block_state, x, None if stores is None else (stores[0][i], stores[1][i], None))
                new_k.append(k)
                new_v.append(v)
            stores = None if cache is None else (new_k, new_v)
        x = rms_norm(x, self.final_norm[...], self.config.rms_norm_eps)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(k=stores[0], v=stores[1], index=index + T, start=cache.start, prefix=cache.prefix)
        if return_hidden:
            return x, new_cache
        return self.logits(x, sampling=cache is not None), new_cache

    def forward_paged(self, tokens: jax.Array, kv: PagedKV, view: PageView) -> tuple[jax.Array, PagedKV]:
        """The engine's pass (`common.engine`): tokens [B, T] int32 at view.positions, under the paged cache
        -> (final hidden [B, T, d], the pool with their keys and values written). The layers always scan here
        (the pool is one stacked array per k and v, carried by the scan and written in place)."""
        cos, sin = rope_cos_sin(view.positions, self.config.head_dim, self.config.rope_theta)
        x = constrain(jnp.take(self.embedding[...], tokens, axis=0).astype(self.dtype), ("batch", "length", "act_embed"))
        graphdef, stacked = nnx.split(self.layers)

        def body(carry, xs):
            x, pools = carry
            block_state, i = xs
            block = nnx.merge(graphdef, block_state)
            x, pools = block(x, cos, sin, None, PagedLayer(*pools, i, view), None, self.dtype, self.backend)
            return (x, pools), None

        layer_ids = jnp.arange(self.config.num_layers, dtype=jnp.int32)
        (x, (k, v)), _ = jax.lax.scan(body, (x, (kv.k, kv.v)), (stacked, layer_ids))
        return rms_norm(x, self.final_norm[...], self.config.rms_norm_eps), PagedKV(k=k, v=v)

    def head(self) -> tuple[jax.Array, bool]:
        """(the output head's weight in the compute dtype, transposed: whether it is [V, d], the tied embedding)."""
        tied = self.config.tie_embeddings
        return (self.embedding if tied else self.lm_head)[...].astype(self.dtype), tied

    def logits(self, hidden: jax.Array, sampling: bool = False) -> jax.Array:
        """hidden [..., d] -> logits [..., V] float32. sampling: as in `product`."""
        head, tied = self.head()
        out = product(hidden, head, 1, sampling, transposed=tied, out_dtype=jnp.float32)
        return constrain(out, ("batch", "length", "act_vocab")) if out.ndim == 3 else out


def abstract_decoder(config: ModelConfig, dtype="float32", param_dtype="float32",
                     attention: str | AttentionBackend = "xla") -> Decoder:
    """The decoder's structure with ShapeDtypeStruct leaves: no memory is allocated."""
    return nnx.eval_shape(lambda: Decoder(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0),
                                          attention=attention))
