"""The rollout engine's decode step (`common.engine.programs.pass_and_sample`) with abstract inputs, ready to
compile for a mesh: weights in the engine's inference layout (`common.engine.weights`), one page pool per batch
shard (split over kv heads too), rows over the batch axes, the step in shard_map over them as the engine runs it
(`common.engine.programs.step_function`). `collectives` reads the compiled program's all-gathers, so a test can show
that a decode step gathers no weights."""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from common.aot.abstract import abstract_array, abstract_model_state
from common.aot.compiled import CompiledMemory, compile_for
from common.config import ModelConfig
from common.engine.programs import copy_function, step_function
from common.engine.weights import inference_shardings
from common.paged_kv import PAGE_AXES, PagedKV, PageView
from common.sampling import SamplingMode
from common.sharding import batch_shards

_ALL_GATHER = re.compile(r"= (\w+)\[([\d,]*)\][^=]*? all-gather(?:-start)?\(")
_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1, "s64": 8, "f64": 8}


@dataclasses.dataclass(frozen=True)
class EngineStep:
    """A compiled decode step: its memory per device, and the bytes of each all-gather's result."""

    memory: CompiledMemory
    all_gather_bytes: tuple[int, ...]


def collectives(hlo_text: str) -> tuple[int, ...]:
    """Result bytes of every all-gather in a compiled program's HLO text, largest first."""
    sizes = []
    for dtype, dims in _ALL_GATHER.findall(hlo_text):
        sizes.append(math.prod(int(d) for d in dims.split(",") if d) * _BYTES.get(dtype, 4))
    return tuple(sorted(sizes, reverse=True))


def compile_engine_step(config: ModelConfig, mesh: Mesh, *, rows: int, pages_per_row: int, num_pages: int,
                        page_size: int = 16, dtype="bfloat16", pool_dtype=None, attention: str = "auto",
                        trainer_weights: bool = False, temperature: float = 1.0, top_k: int = 0,
                        top_p: float = 1.0) -> EngineStep:
    """Compiles one decode step of `rows` sequences (over all batch shards), each listing `pages_per_row` pages
    of its shard's pool of `num_pages` pages a layer, for `mesh`, without allocating anything. dtype: the weights'
    (the inference copy's) and the compute dtype; pool_dtype: the pool's (default dtype). trainer_weights: decode
    from the trainer's float32 fsdp-split parameters instead of the inference copy (the design the copy replaces).
    temperature / top_k / top_p: the sampling mode the program is specialised for."""
    graphdef, state = abstract_model_state(config, mesh, dtype=dtype, param_dtype="float32" if trainer_weights
                                           else dtype, attention=attention)
    if not trainer_weights:
        shardings = inference_shardings(state, mesh)
        state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state, shardings)
    shards = batch_shards(mesh)
    pool_shape = (config.num_kv_heads, config.num_layers, num_pages * shards, page_size, config.head_dim)
    pool = abstract_array(mesh, pool_shape, jnp.dtype(pool_dtype or dtype), PAGE_AXES)
    row = lambda *shape, dt=jnp.int32: abstract_array(mesh, (rows, *shape), dt, ("batch",) + (None,) * len(shape))
    view = PageView(page_table=row(pages_per_row), positions=row(1), lengths=row())
    mode = SamplingMode.from_params(temperature, top_k, top_p)

    run = step_function(graphdef, mode, mesh=mesh)
    # no backend data; tokens, view, last; seeds, sequence ids, token index; temperature, top_p: one per row
    compiled, seconds = compile_for(jax.jit(run, donate_argnums=(2,)), state, None, PagedKV(k=pool, v=pool), row(1),
                                    view, row(), row(), row(), row(), row(dt=jnp.float32), row(dt=jnp.float32),
                                    mesh=mesh)
    return EngineStep(CompiledMemory.from_compiled(compiled, seconds), collectives(compiled.as_text()))


def compile_page_copy(config: ModelConfig, mesh: Mesh, *, copies: int, num_pages: int, page_size: int = 16,
                      dtype="bfloat16") -> EngineStep:
    """Compiles the engine's page copy (`common.engine.programs.copy_pages`: admission's copies of prompt tail
    pages) of `copies` pages a batch shard, each shard's pool `num_pages` pages a layer, for `mesh`."""
    shards = batch_shards(mesh)
    pool_shape = (config.num_kv_heads, config.num_layers, num_pages * shards, page_size, config.head_dim)
    pool = abstract_array(mesh, pool_shape, jnp.dtype(dtype), PAGE_AXES)
    pages = abstract_array(mesh, (copies * shards,), jnp.int32, ("batch",))
    compiled, seconds = compile_for(jax.jit(copy_function(mesh), donate_argnums=(0,)), PagedKV(k=pool, v=pool), pages,
                                    pages, mesh=mesh)
    return EngineStep(CompiledMemory.from_compiled(compiled, seconds), collectives(compiled.as_text()))


def largest_decode_step(engine) -> tuple[int, int]:
    """(rows over all batch shards, pages per row) of `engine`'s largest decode step: every slot generating, each
    at its full context, rounded as the engine rounds a call's rows and pages (`Engine._rows`,
    `Engine._pages_needed`)."""
    return engine._rows(engine.shard_slots) * engine.shards, engine._pages_needed(engine.max_cache_length)


def compile_largest_decode_step(engine, mesh: Mesh, *, attention: str = "auto", temperature: float = 1.0,
                                top_k: int = 0, top_p: float = 1.0) -> EngineStep:
    """`compile_engine_step` for the largest decode step of a built `engine` (common.engine.Engine, which
    allocates nothing until it generates, so one built on an abstract model will do): its pool, page size,
    weights dtype and rows."""
    rows, pages = largest_decode_step(engine)
    return compile_engine_step(engine.config, mesh, rows=rows, pages_per_row=pages, num_pages=engine.num_pages,
                               page_size=engine.page_size, dtype=engine.weights_dtype or engine.dtype,
                               pool_dtype=engine.dtype, attention=attention, temperature=temperature,
                               top_k=top_k, top_p=top_p)
