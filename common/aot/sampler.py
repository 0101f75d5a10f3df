"""The sampler's program (prefill + `while_loop` decode over a static KV cache,
`common.sampler.prefill_and_decode`) with abstract inputs, ready to compile for a mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from common.aot.abstract import abstract_array
from common.sampler import prefill_and_decode
from common.sampling import SamplingMode


def decode_program(graphdef, *, cache_length: int, pad_id: int = 0, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0):
    """jit(state, tokens, start, seed, max_new_tokens, temperature, top_p, stop_ids, valid) -> sampled
    tokens, log-probs, lengths, stopped: the program `common.sampler.Sampler` compiles for one bucket."""
    mode = SamplingMode.from_params(temperature, top_k, top_p)

    def run(state, *args):
        model = nnx.merge(graphdef, state)
        return prefill_and_decode(model, *args, mode=mode, cache_length=cache_length, pad_id=pad_id)

    return jax.jit(run)


def abstract_decode_inputs(mesh: Mesh, batch: int, prompt_len: int, num_stop_ids: int = 2) -> tuple:
    """ShapeDtypeStructs of the sampler's inputs after the state: left-padded prompts [B, P], start [B],
    seed, max_new_tokens, temperature, top_p, stop ids [S], valid [B]; batch rows split over (data, fsdp)."""
    scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype)
    return (abstract_array(mesh, (batch, prompt_len), jnp.int32, ("batch", None)),
            abstract_array(mesh, (batch,), jnp.int32, ("batch",)),
            scalar(jnp.int32), scalar(jnp.int32), scalar(jnp.float32), scalar(jnp.float32),
            jax.ShapeDtypeStruct((num_stop_ids,), jnp.int32),
            abstract_array(mesh, (batch,), jnp.bool_, ("batch",)))
