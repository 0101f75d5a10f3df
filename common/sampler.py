"""Batched KV-cache sampler: jitted prefill + `while_loop` decode over a static cache.

Prompts are left-padded to a length bucket (`length_bucket`) and the batch to a batch bucket, so repeated
calls with similar shapes reuse one compiled program. Per call, `Sampler._plan` picks how to prefill: all
prompts at one bucket, or groups (`common.prefill_plan`) that each compute their shared prefix once and pad
their rows to their own length. Decoding stops as soon as every sequence has produced a stop token or its
budget. Every sampled token comes with its log-probability. On a mesh, the batch is split over (data, fsdp)
and heads over tensor, by the rules table in `common.sharding`.

Every forward pass under the cache goes through the model's attention backend (`common.attention`): its
`cached_forward` and `logits` are the decoder's own unless the backend runs them its own way, on data it
`prepare`s once per parameter version.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.kv_cache import KVCache
from common.model import Decoder
from common.per_version import PerVersion
from common.prefill_plan import PrefillGroup, bucket, length_bucket, plan_prefill
from common.rollout import Rollout, SampleOutput
from common.sampling import SamplingMode, check_logprobs_not_nan, sample_tokens
from common.sharding import logical_to_spec
from common.vocab import check_pad_id, check_prompt_ids

__all__ = ["Sampler", "SampleOutput", "PromptTooLongError", "call_shape", "prefill_and_decode", "bucket",
           "length_bucket"]


class PromptTooLongError(ValueError):
    """prompt length + max_new_tokens exceeds the cache."""


def call_shape(longest_prompt: int, max_new_tokens: int, max_cache_length: int,
               min_prompt_bucket: int = 16) -> tuple[int, int]:
    """(prompt bucket P, cache length) of a sampler call: P the prompt's `length_bucket`, the cache P plus the
    new-token budget's (not the bucket of their sum: decode attention reads every cache slot each step, so
    a 200-token prompt with 40 new tokens decodes over 256 + 48 slots, not 384), both capped by the cache."""
    P = min(length_bucket(longest_prompt, min_prompt_bucket), max_cache_length - max_new_tokens)
    return P, min(P + length_bucket(max_new_tokens, min_prompt_bucket), max_cache_length)


def _prefill(model: Decoder, tokens, start, *, cache_length: int, prepared=None):
    """tokens [B, P] left-padded prompts, start [B] -> (cache of `cache_length` slots with the prompts in
    slots 0..P-1, the last position's logits [B, V]). prepared: the backend's, or None."""
    backend = model.backend
    cache = model.new_cache(tokens.shape[0], cache_length, start=start)
    hidden, cache = backend.cached_forward(model, prepared, tokens, cache, prefill=True)
    return cache, backend.logits(model, prepared, hidden[:, -1])


def _prefill_with_prefix(model: Decoder, prefix, tokens, start, *, cache_length: int, prepared=None):
    """A prefix [L] that every row shares, prefilled once and copied into slots 0..L-1 of every row; then
    each row's rest: tokens [B, T] left-padded, start [B] the slot of a row's first own token (in L..L+T-1),
    attending to the prefix and to itself. L = 0: a plain prefill. -> (cache, last logits [B, V])."""
    B, L = tokens.shape[0], prefix.shape[0]
    if L == 0:
        return _prefill(model, tokens, start, cache_length=cache_length, prepared=prepared)
    backend = model.backend
    one, _ = _prefill(model, prefix[None], jnp.zeros((1,), jnp.int32), cache_length=L, prepared=prepared)
    cache = model.new_cache(B, cache_length, start=start, prefix=jnp.full((B,), L))
    batch_axis = 0 if cache.per_layer else 1  # the row axis of a store
    put = lambda big, part: big.at[cache.slots(0, L)].set(jnp.broadcast_to(part, big.shape[:batch_axis] + (B,)
                                                                           + part.shape[batch_axis + 1:]))
    cache = cache.with_stores([put(b, p) for b, p in zip(cache.stores(), one.stores())], index=jnp.int32(L))
    hidden, cache = backend.cached_forward(model, prepared, tokens, cache)
    return cache, backend.logits(model, prepared, hidden[:, -1])


def _prefill_group(model: Decoder, cache: KVCache, logits, prefix, tokens, start, rows, prepared=None, *,
                   prompt_length: int):
    """Prefills one group of a plan into the call's cache, whose prompts end at slot prompt_length: the
    group's prefix [L] goes to slots 0..L-1 of its rows, their rests [b, T] (start [b] within L..L+T-1) to
    the last T prompt slots. rows [b]: the group's rows of the call (>= B: batch padding, dropped).
    RoPE positions count from a row's start (plus its prefix), so keys do not depend on where they sit."""
    L, T = prefix.shape[0], tokens.shape[1]
    small, group_logits = _prefill_with_prefix(model, prefix, tokens, start, cache_length=L + T,
                                               prepared=prepared)

    def put(big, part):  # the group's prefix slots, then its rests' slots, into its rows of the call
        part = part.astype(big.dtype)
        big = big.at[cache.slots(0, L, rows)].set(part[small.slots(0, L)], mode="drop")
        return big.at[cache.slots(prompt_length - T, prompt_length, rows)].set(part[small.slots(L, L + T)],
                                                                               mode="drop")

    cache = cache.with_stores([put(b, s) for b, s in zip(cache.stores(), small.stores())])
    return cache, logits.at[rows].set(group_logits, mode="drop")


def _decode(model: Decoder, cache: KVCache, logits, seed, max_new_tokens, temperature, top_p, stop_ids, valid,
            *, prompt_length: int, mode: SamplingMode, pad_id: int, prepared=None):
    """Samples the first token from the prompts' last logits [B, V], then decodes over the prefilled cache.
    Returns ((out_tokens [B, N], out_logprobs [B, N], lengths [B], stopped [B], steps), final cache),
    N = free cache slots. (Returning the cache lets a caller that donates it decode in place.)"""
    backend = model.backend
    B = logits.shape[0]
    N = cache.max_length - prompt_length
    row_keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.key(seed), r))(jnp.arange(B))

    def pick(logits, step):
        keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, step)
        return sample_tokens(logits, keys, temperature, top_p, mode)

    token, logp = pick(logits, 0)
    out_tokens = jnp.full((B, N), pad_id, jnp.int32).at[:, 0].set(token)
    out_logp = jnp.zeros((B, N), jnp.float32).at[:, 0].set(logp)
    stopped = jnp.isin(token, stop_ids)
    done = stopped | ~valid | (max_new_tokens <= 1)
    lengths = jnp.ones((B,), jnp.int32)

    def cond(carry):
        step, _, _, _, _, done, *_ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, token, cache, out_tokens, out_logp, done, stopped, lengths = carry
        hidden, cache = backend.cached_forward(model, prepared, token[:, None], cache)
        new_token, logp = pick(backend.logits(model, prepared, hidden[:, 0]), step)
        new_token = jnp.where(done, pad_id, new_token)
        out_tokens = jax.lax.dynamic_update_slice(out_tokens, new_token[:, None], (0, step))
        out_logp = jax.lax.dynamic_update_slice(out_logp, jnp.where(done, 0.0, logp)[:, None], (0, step))
        lengths = lengths + (~done).astype(jnp.int32)
        hit_stop = ~done & jnp.isin(new_token, stop_ids)
        stopped = stopped | hit_stop
        done = done | hit_stop | (step + 1 >= max_new_tokens)
        return step + 1, new_token, cache, out_tokens, out_logp, done, stopped, lengths

    carry = (jnp.int32(1), token, cache, out_tokens, out_logp, done, stopped, lengths)
    steps, _, cache, out_tokens, out_logp, _, stopped, lengths = jax.lax.while_loop(cond, body, carry)
    return (out_tokens, out_logp, lengths, stopped, steps), cache


def prefill_and_decode(model: Decoder, tokens, start, seed, max_new_tokens, temperature, top_p, stop_ids, valid,
                       *, mode: SamplingMode, cache_length: int, pad_id: int, prepared=None):
    """The sampler's one-program call: prefill of tokens [B, P] (left-padded, start [B]) into a cache of
    `cache_length` slots, then decode; valid [B] (False = batch padding). seed, max_new_tokens int32 and
    temperature, top_p float32 scalars; stop_ids [S] int32. Returns (out_tokens [B, N], out_logprobs [B, N],
    lengths [B], stopped [B], steps), N = cache_length - P. prepared: the backend's (`Sampler`), or None."""
    cache, logits = _prefill(model, tokens, start, cache_length=cache_length, prepared=prepared)
    samples, _ = _decode(model, cache, logits, seed, max_new_tokens, temperature, top_p, stop_ids, valid,
                         prompt_length=tokens.shape[1], mode=mode, pad_id=pad_id, prepared=prepared)
    return samples


class Sampler(Rollout):
    """Holds the compiled programs for one model. `sample(prompt_ids, ...)` with the parameters it holds
    (`update_params`), or `generate(params, prompt_ids, ...)` (the `Rollout` protocol) with given ones ->
    SampleOutput.

    adaptive_prefill: choose per call how to prefill (`common.prefill_plan`): groups of prompts of similar
    length, or sharing a prefix that is then computed once per group; False: every prompt padded to the
    longest one's bucket, always one program per call. On a mesh that spans several processes the outputs
    come back replicated: every host gets every sample.
    """

    def __init__(self, model: Decoder, *, mesh: Mesh | None = None, max_cache_length: int | None = None,
                 pad_id: int = 0, min_prompt_bucket: int = 16, min_batch_bucket: int = 1,
                 adaptive_prefill: bool = True):
        self.graphdef, self.state = nnx.split(model)
        self.config = model.config
        self.backend = model.backend
        self.backend.check_mesh(mesh)
        check_pad_id(pad_id, model.config.vocab_size)
        self.mesh = mesh
        self.max_cache_length = max_cache_length or model.config.max_position_embeddings
        self.pad_id = pad_id
        self.min_prompt_bucket = min_prompt_bucket
        self.min_batch_bucket = min_batch_bucket
        self.adaptive_prefill = adaptive_prefill
        self.dtype = model.dtype
        self._compiled: dict[tuple, object] = {}
        self._prepared = PerVersion(lambda state: self.backend.prepare(nnx.merge(self.graphdef, state)))

    def update_params(self, model: Decoder) -> None:
        """Point `sample` at new parameter values (same structure), e.g. after a training step."""
        self.state = nnx.state(model)

    def _prepared_for(self, state, rows: int) -> Any:
        """The backend's prepared data when a call of `rows` rows runs on it (`AttentionBackend.uses_prepared`),
        else None. Made once per parameter version: kept while the parameters are the same arrays."""
        return self._prepared.get(state) if self.backend.uses_prepared(rows, self.dtype) else None

    @property
    def compile_keys(self) -> list[tuple]:
        return list(self._compiled)

    def _output_sharding(self):
        """out_shardings of the programs that return samples: replicated when the mesh spans several processes
        (a batch-sharded result would live partly on other hosts' devices); else as XLA chooses (None)."""
        if self.mesh is None or jax.process_count() == 1:
            return None
        return NamedSharding(self.mesh, PartitionSpec())

    def _jit(self, key: tuple, fn, **jit_kwargs):
        if key not in self._compiled:
            graphdef = self.graphdef

            def run(state, *args, **kwargs):
                return fn(nnx.merge(graphdef, state), *args, **kwargs)

            self._compiled[key] = jax.jit(run, **jit_kwargs)
        return self._compiled[key]

    def _samples_jit(self, key: tuple, fn, also=None, **jit_kwargs):
        """`_jit` for a program that returns the samples, then (if `also` is given) arrays laid out like
        `also`, whose shardings they keep."""
        out = self._output_sharding()
        if out is not None:
            jit_kwargs["out_shardings"] = out if also is None else (out, jax.tree.map(lambda x: x.sharding, also))
        return self._jit(key, fn, **jit_kwargs)

    def _program(self, batch: int, prompt_len: int, cache_length: int, mode: SamplingMode):
        """Prefill + decode in one program (every prompt padded to one bucket)."""
        return self._samples_jit((batch, prompt_len, cache_length, mode),
                                 lambda model, *args, prepared: prefill_and_decode(
                                     model, *args, mode=mode, cache_length=cache_length, pad_id=self.pad_id,
                                     prepared=prepared))

    def _prefix_program(self, batch: int, prefix_len: int, rest_len: int, cache_length: int, mode: SamplingMode):
        """A prefix every prompt shares, prefilled once, each prompt's rest, then decode: one program."""
        def run(model, prefix, tokens, start, *args, prepared):
            cache, logits = _prefill_with_prefix(model, prefix, tokens, start, cache_length=cache_length,
                                                 prepared=prepared)
            samples, _ = _decode(model, cache, logits, *args, prompt_length=prefix_len + rest_len, mode=mode,
                                 pad_id=self.pad_id, prepared=prepared)
            return samples
        return self._samples_jit(("prefix", batch, prefix_len, rest_len, cache_length, mode), run)

    def _empty_cache(self, batch: int, prompt_len: int, cache_length: int):
        """(start [B], prefix [B]) -> (zero cache with index prompt_len, zero logits [B, V])."""
        def empty(model, start, prefix):
            cache = model.new_cache(batch, cache_length, start=start, prefix=prefix)
            return (dataclasses.replace(cache, index=jnp.int32(prompt_len)),
                    jnp.zeros((batch, model.config.vocab_size), jnp.float32))
        return self._jit(("empty", batch, prompt_len, cache_length), empty)

    def _group_program(self, group: tuple[int, int, int], batch: int, prompt_len: int, cache_length: int):
        """group: (batch bucket, prefix, rest) of one prefill group."""
        return self._jit(("prefill_group", *group, batch, prompt_len, cache_length),
                         lambda model, *args, prepared: _prefill_group(model, *args, prepared=prepared,
                                                                       prompt_length=prompt_len),
                         donate_argnums=(1, 2))

    def _decode_program(self, batch: int, prompt_len: int, cache_length: int, mode: SamplingMode,
                        cache: KVCache):
        """(samples, final cache); the cache is donated, so decoding updates it in place."""
        return self._samples_jit(("decode", batch, prompt_len, cache_length, mode),
                                 lambda model, *args, prepared: _decode(model, *args, prompt_length=prompt_len,
                                                                        mode=mode, pad_id=self.pad_id,
                                                                        prepared=prepared),
                                 also=cache, donate_argnums=(1,))

    def _put(self, x: np.ndarray, logical_axes):
        if self.mesh is None:
            return jnp.asarray(x)
        spec = logical_to_spec(logical_axes, x.shape, self.mesh)
        return jax.device_put(x, NamedSharding(self.mesh, spec))

    def _left_padded(self, prompts: Sequence[Sequence[int]], rows: int, length: int):
        """(tokens [rows, length] left-padded, start [rows]); rows past the prompts: a one-token dummy."""
        tokens = np.full((rows, length), self.pad_id, np.int32)
        start = np.full((rows,), length - 1, np.int32)
        for i, p in enumerate(prompts):
            tokens[i, length - len(p):] = p
            start[i] = length - len(p)
        return tokens, start

    def sample(self, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 0.0,
               top_k: int = 0, top_p: float = 1.0, seed: int = 0,
               stop_token_ids: Sequence[int] = ()) -> SampleOutput:
        """`generate` with the parameters the sampler holds."""
        return self.generate(self.state, prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_k=top_k, top_p=top_p, seed=seed, stop_token_ids=stop_token_ids)

    def generate(self, params, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 stop_token_ids: Sequence[int] = ()) -> SampleOutput:
        """The `Rollout` protocol: params, the decoder's `nnx.State` (the structure the sampler was built with)."""
        if not prompt_ids:
            return SampleOutput([], [], [])
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        for i, p in enumerate(prompt_ids):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty")
            if len(p) + max_new_tokens > self.max_cache_length:
                raise PromptTooLongError(
                    f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} it needs "
                    f"{len(p) + max_new_tokens} cache slots, but the cache holds {self.max_cache_length}")
        check_prompt_ids(prompt_ids, self.config.vocab_size)
        mode = SamplingMode.from_params(temperature, top_k, top_p)
        n = len(prompt_ids)
        B = bucket(n, self.min_batch_bucket)
        P, cache_length = call_shape(max(len(p) for p in prompt_ids), max_new_tokens, self.max_cache_length,
                                     self.min_prompt_bucket)
        plan = self._plan(prompt_ids, B, P, max_new_tokens)
        valid = self._put(np.arange(B) < n, ("batch",))
        settings = (jnp.int32(seed), jnp.int32(max_new_tokens), jnp.float32(temperature or 1.0),
                    jnp.float32(top_p), jnp.asarray(np.asarray(sorted(set(stop_token_ids)) or [-1], np.int32)))
        ctx = jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
        with ctx:
            if plan is None:
                tokens, start = self._left_padded(prompt_ids, B, P)
                out = self._program(B, P, cache_length, mode)(
                    params, self._put(tokens, ("batch", None)), self._put(start, ("batch",)), *settings, valid,
                    prepared=self._prepared_for(params, B))
            elif len(plan) == 1:
                (group,) = plan
                L, T = group.prefix, group.rest
                tokens, start = self._left_padded([p[L:] for p in prompt_ids], B, T)
                out = self._prefix_program(B, L, T, self._planned_cache_length(L + T, max_new_tokens), mode)(
                    params, jnp.asarray(np.asarray(prompt_ids[0][:L], np.int32)),
                    self._put(tokens, ("batch", None)), self._put(start + L, ("batch",)), *settings, valid,
                    prepared=self._prepared_for(params, B))
            else:
                out = self._sample_grouped(params, prompt_ids, plan, B, max_new_tokens, mode, settings, valid)
        out_tokens, out_logp, lengths, stopped, steps = (np.asarray(x) for x in jax.device_get(out))
        logprobs = [out_logp[i, :lengths[i]].tolist() for i in range(n)]
        check_logprobs_not_nan(logprobs)  # NaN logits (diverged weights) have no log-probability to return
        return SampleOutput(
            token_ids=[out_tokens[i, :lengths[i]].tolist() for i in range(n)],
            logprobs=logprobs,
            finish_reasons=["stop" if stopped[i] else "length" for i in range(n)],
            decode_steps=int(steps),
        )

    def _plan(self, prompt_ids, B: int, P: int, max_new_tokens: int) -> list[PrefillGroup] | None:
        """`common.prefill_plan.plan_prefill`'s groups, or None for the one-program path (every prompt
        padded to P): adaptive prefill off, the plan is that anyway, or its cache would not fit."""
        if not self.adaptive_prefill:
            return None
        plan = plan_prefill(prompt_ids, self.min_prompt_bucket, self.min_batch_bucket)
        if len(plan) == 1 and plan[0].prefix == 0:
            return None
        if self._planned_cache_length(max(g.length for g in plan), max_new_tokens) > self.max_cache_length:
            return None
        return plan

    def _planned_cache_length(self, prompt_length: int, max_new_tokens: int) -> int:
        """Cache slots of a planned call whose prompts end at slot `prompt_length`: those plus the bucket of
        the new tokens."""
        return prompt_length + length_bucket(max_new_tokens, self.min_prompt_bucket)

    def _sample_grouped(self, params, prompt_ids, plan: list[PrefillGroup], B: int, max_new_tokens: int, mode,
                        settings, valid):
        """Each group prefilled (its prefix once, its rows' rests at its own length) into one cache whose
        prompts end at the longest group's length; then one decode over every row."""
        P = max(g.length for g in plan)
        cache_length = self._planned_cache_length(P, max_new_tokens)
        start, prefix = np.full((B,), P - 1, np.int32), np.zeros((B,), np.int32)
        for g in plan:
            for r in g.rows:
                start[r], prefix[r] = P - (len(prompt_ids[r]) - g.prefix), g.prefix
        cache, logits = self._empty_cache(B, P, cache_length)(
            params, self._put(start, ("batch",)), self._put(prefix, ("batch",)))
        for g in plan:
            b = bucket(len(g.rows), self.min_batch_bucket)
            tokens, group_start = self._left_padded([prompt_ids[r][g.prefix:] for r in g.rows], b, g.rest)
            rows = np.full((b,), B, np.int32)  # B: out of range, dropped
            rows[:len(g.rows)] = g.rows
            cache, logits = self._group_program((b, g.prefix, g.rest), B, P, cache_length)(
                params, cache, logits, jnp.asarray(np.asarray(prompt_ids[g.rows[0]][:g.prefix], np.int32)),
                self._put(tokens, ("batch", None)), self._put(group_start + g.prefix, ("batch",)),
                jnp.asarray(rows), prepared=self._prepared_for(params, b))
        samples, _ = self._decode_program(B, P, cache_length, mode, cache)(
            params, cache, logits, *settings, valid, prepared=self._prepared_for(params, B))
        return samples
