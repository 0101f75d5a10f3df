"""The engine's one device program: a pass of some tokens of some sequences over the paged cache, then one
sampled token per sequence from its last real token's logits.

A decode step is the pass of one token per row; a prefill chunk the pass of up to T tokens per row (right
padded, the padding written to the null page). The random key of a sampled token is derived from (seed,
sequence id, token index) only, so a sequence's samples never depend on the slot, the neighbours or the
chunking it had; it is the same derivation as the static sampler's (row r, step i), so both draw the same
tokens from the same logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

from common.paged_kv import PagedKV, PageView
from common.sampling import SamplingMode, sample_tokens, scaled_logits
from common.sharding import batch_axes

TOP_LOGPROBS = 20  # the most likely tokens a step reports when a sequence asks (`pass_and_sample`'s top_logprobs)


def token_keys(seeds: jax.Array, sequence_ids: jax.Array, token_index: jax.Array) -> jax.Array:
    """seeds, sequence_ids, token_index [B] int32 -> [B] PRNG keys."""
    key = lambda seed, s, i: jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), s), i)
    return jax.vmap(key)(seeds, sequence_ids, token_index)


def top_logprobs(logits: jax.Array, temperature: jax.Array, mode: SamplingMode, k: int):
    """logits [B, V], temperature [B, 1] -> (ids [B, k] int32, log-probabilities [B, k] float32) of the k most
    likely tokens, most likely first, under the distribution `sample_tokens` reports the sampled token's
    log-probability in (softmax(logits / temperature), temperature 1 when greedy; before top-k / top-p)."""
    logp = jax.nn.log_softmax(logits if mode.greedy else scaled_logits(logits, temperature), axis=-1)
    values, ids = jax.lax.top_k(logp, min(k, logp.shape[-1]))
    return ids.astype(jnp.int32), values


def pass_and_sample(model, prepared, kv: PagedKV, tokens, view: PageView, last, seeds, sequence_ids, token_index,
                    temperature, top_p, *, mode: SamplingMode, top: int = 0):
    """tokens [B, T] int32 at view.positions under the pool kv, through the model's attention backend (its own
    pass on `prepared`, the backend's per-parameter-version data, where it has one; None: the decoder's); last
    [B]: index in T of each row's last real token; seeds, sequence_ids, token_index [B] int32 (the key of the
    token sampled next); temperature, top_p [B] float32 (each row its request's). -> (the pool with the tokens'
    keys and values written, sampled tokens [B] int32, their log-probabilities [B] float32), and with top > 0 (a
    program of its own) also the `top` most likely tokens of each row (`top_logprobs`: ids [B, top],
    log-probabilities [B, top])."""
    backend = model.backend
    hidden, kv = backend.paged_forward(model, prepared, tokens, kv, view)
    final = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, d]
    logits = backend.logits(model, prepared, final)
    token, logp = sample_tokens(logits, token_keys(seeds, sequence_ids, token_index), temperature[:, None],
                                top_p[:, None], mode)
    if top:
        return kv, token, logp, top_logprobs(logits, temperature[:, None], mode, top)
    return kv, token, logp


def copy_pages(kv: PagedKV, source: jax.Array, destination: jax.Array) -> PagedKV:
    """The pool with page destination[i] of every layer a copy of page source[i] (int32 [n]; padding copies the
    null page onto itself)."""
    move = lambda pool: pool.at[:, :, destination].set(pool[:, :, source])
    return PagedKV(k=move(kv.k), v=move(kv.v))


def copy_function(mesh: Mesh | None = None):
    """`copy_pages` for `jax.jit`; on a mesh whose batch is split, in `shard_map` over the batch axes, each shard
    copying within its own pages (source and destination split like the rows of `step_function`)."""
    axes = batch_axes(mesh) if mesh is not None else ()
    if not axes:
        return copy_pages
    pool = PagedKV(k=P(None, None, axes), v=P(None, None, axes))
    return jax.shard_map(copy_pages, mesh=mesh, in_specs=(pool, P(axes), P(axes)), out_specs=pool,
                         axis_names=frozenset(axes), check_vma=False)


def step_function(graphdef, mode: SamplingMode, top: int = 0, mesh: Mesh | None = None):
    """`pass_and_sample` as a function of (state, prepared, kv, tokens, view, last, seeds, sequence_ids,
    token_index, temperature, top_p) for `jax.jit`. On a mesh whose batch is split (`common.sharding.batch_axes`)
    it runs in `shard_map` over the batch axes: the pool's page axis and every per-row array are split over
    them, each shard's page tables number that shard's own pages, and the weights are whole on each batch shard
    (the inference copy; `tensor` stays with the compiler), so no step moves pages or rows between chips."""
    def run(state, prepared, kv, *args):
        return pass_and_sample(nnx.merge(graphdef, state), prepared, kv, *args, mode=mode, top=top)

    axes = batch_axes(mesh) if mesh is not None else ()
    if not axes:
        return run
    rows = P(axes)
    pool = PagedKV(k=P(None, None, axes), v=P(None, None, axes))
    view = PageView(page_table=rows, positions=rows, lengths=rows)
    outputs = (pool, rows, rows) + (((rows, rows),) if top else ())
    return jax.shard_map(run, mesh=mesh, in_specs=(P(), P(), pool, rows, view) + (rows,) * 6,
                         out_specs=outputs, axis_names=frozenset(axes), check_vma=False)
