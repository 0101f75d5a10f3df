"""Batched KV-cache sampler: one jitted prefill + `while_loop` decode over a static cache.

Prompts are left-padded to a length bucket and the batch to a batch bucket, so repeated calls with
similar shapes reuse one compiled program. Decoding stops as soon as every sequence has produced a stop
token or its budget. Every sampled token comes with its log-probability. On a mesh, the batch is split
over (data, fsdp) and heads over tensor, by the rules table in `common.sharding`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from common.model import Decoder, KVCache
from common.sampling import SamplingMode, sample_tokens
from common.sharding import logical_to_spec


class PromptTooLongError(ValueError):
    """prompt length + max_new_tokens exceeds the cache."""


@dataclasses.dataclass
class SampleOutput:
    """Per sequence, the generated part only (stop token included when one was produced)."""

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    finish_reasons: list[str]  # "stop" | "length"


def bucket(n: int, minimum: int) -> int:
    """Smallest power of two >= max(n, minimum)."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _decode_loop(model: Decoder, tokens, start, seed, max_new_tokens, temperature, top_p, stop_ids,
                 valid, *, mode: SamplingMode, cache_length: int, pad_id: int):
    """tokens [B, P] left-padded prompts; start [B]; valid [B] (False = batch padding).
    Returns (out_tokens [B, N], out_logprobs [B, N], lengths [B], stopped [B]) with N = cache_length - P."""
    B, P = tokens.shape
    N = cache_length - P
    row_keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.key(seed), r))(jnp.arange(B))
    cache = KVCache.zeros(model.config, B, cache_length, model.dtype, start=start)
    hidden, cache = model.forward(tokens, cache=cache, return_hidden=True)
    logits = model.logits(hidden[:, -1])

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
        logits, cache = model.forward(token[:, None], cache=cache)
        new_token, logp = pick(logits[:, 0], step)
        new_token = jnp.where(done, pad_id, new_token)
        out_tokens = jax.lax.dynamic_update_slice(out_tokens, new_token[:, None], (0, step))
        out_logp = jax.lax.dynamic_update_slice(out_logp, jnp.where(done, 0.0, logp)[:, None], (0, step))
        lengths = lengths + (~done).astype(jnp.int32)
        hit_stop = ~done & jnp.isin(new_token, stop_ids)
        stopped = stopped | hit_stop
        done = done | hit_stop | (step + 1 >= max_new_tokens)
        return step + 1, new_token, cache, out_tokens, out_logp, done, stopped, lengths

    carry = (jnp.int32(1), token, cache, out_tokens, out_logp, done, stopped, lengths)
    _, _, _, out_tokens, out_logp, _, stopped, lengths = jax.lax.while_loop(cond, body, carry)
    return out_tokens, out_logp, lengths, stopped


class Sampler:
    """Holds the compiled programs for one model. `sample(prompt_ids, ...)` -> SampleOutput."""

    def __init__(self, model: Decoder, *, mesh: Mesh | None = None, max_cache_length: int | None = None,
                 pad_id: int = 0, min_prompt_bucket: int = 16, min_batch_bucket: int = 1):
        self.graphdef, self.state = nnx.split(model)
        self.config = model.config
        self.mesh = mesh
        self.max_cache_length = max_cache_length or model.config.max_position_embeddings
        self.pad_id = pad_id
        self.min_prompt_bucket = min_prompt_bucket
        self.min_batch_bucket = min_batch_bucket
        self._compiled: dict[tuple, object] = {}

    def update_params(self, model: Decoder) -> None:
        """Point the sampler at new parameter values (same structure), e.g. after a training step."""
        self.state = nnx.state(model)

    @property
    def compile_keys(self) -> list[tuple]:
        return list(self._compiled)

    def _program(self, batch: int, prompt_len: int, cache_length: int, mode: SamplingMode):
        key = (batch, prompt_len, cache_length, mode)
        if key not in self._compiled:
            graphdef, pad_id = self.graphdef, self.pad_id

            def run(state, *args):
                model = nnx.merge(graphdef, state)
                return _decode_loop(model, *args, mode=mode, cache_length=cache_length, pad_id=pad_id)

            self._compiled[key] = jax.jit(run)
        return self._compiled[key]

    def _put(self, x: np.ndarray, logical_axes):
        if self.mesh is None:
            return jnp.asarray(x)
        spec = logical_to_spec(logical_axes, x.shape, self.mesh)
        return jax.device_put(x, NamedSharding(self.mesh, spec))

    def sample(self, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 0.0,
               top_k: int = 0, top_p: float = 1.0, seed: int = 0,
               stop_token_ids: Sequence[int] = ()) -> SampleOutput:
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
        mode = SamplingMode.from_params(temperature, top_k, top_p)
        n = len(prompt_ids)
        longest = max(len(p) for p in prompt_ids)
        B = bucket(n, self.min_batch_bucket)
        P = min(bucket(longest, self.min_prompt_bucket), self.max_cache_length - max_new_tokens)
        cache_length = min(bucket(P + max_new_tokens, 2 * self.min_prompt_bucket), self.max_cache_length)

        tokens = np.full((B, P), self.pad_id, np.int32)
        start = np.full((B,), P - 1, np.int32)
        for i, p in enumerate(prompt_ids):
            tokens[i, P - len(p):] = p
            start[i] = P - len(p)
        tokens[n:, -1] = self.pad_id  # batch padding rows: a one-token dummy prompt
        valid = np.arange(B) < n
        stop = np.asarray(sorted(set(stop_token_ids)) or [-1], np.int32)

        program = self._program(B, P, cache_length, mode)
        ctx = jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
        with ctx:
            out = program(self.state, self._put(tokens, ("batch", None)), self._put(start, ("batch",)),
                          jnp.int32(seed), jnp.int32(max_new_tokens), jnp.float32(temperature or 1.0),
                          jnp.float32(top_p), jnp.asarray(stop), self._put(valid, ("batch",)))
        out_tokens, out_logp, lengths, stopped = (np.asarray(x) for x in jax.device_get(out))
        return SampleOutput(
            token_ids=[out_tokens[i, :lengths[i]].tolist() for i in range(n)],
            logprobs=[out_logp[i, :lengths[i]].tolist() for i in range(n)],
            finish_reasons=["stop" if stopped[i] else "length" for i in range(n)],
        )

