"""The rollout engine's decode step (`common.engine.programs.pass_and_sample`) with abstract inputs, ready to
compile for a mesh: weights in the engine's inference layout (`common.engine.weights`), a page pool split over
kv heads, rows over the batch axes. `collectives` reads the compiled program's all-gathers, so a test can show
that a decode step gathers no weights."""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from common.aot.abstract import abstract_array, abstract_model_state
from common.aot.compiled import CompiledMemory, compile_for
from common.config import ModelConfig
from common.engine.programs import pass_and_sample
from common.engine.weights import inference_shardings
from common.paged_kv import PAGE_AXES, PagedKV, PageView
from common.sampling import SamplingMode

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
                        page_size: int = 16, dtype="bfloat16", attention: str = "auto",
                        trainer_weights: bool = False) -> EngineStep:
    """Compiles one decode step of `rows` sequences, each listing `pages_per_row` pages of a pool of
    `num_pages` pages a layer, for `mesh`, without allocating anything. trainer_weights: decode from the
    trainer's float32 fsdp-split parameters instead of the inference copy (the design the copy replaces)."""
    graphdef, state = abstract_model_state(config, mesh, dtype=dtype, param_dtype="float32" if trainer_weights
                                           else dtype, attention=attention)
    if not trainer_weights:
        shardings = inference_shardings(state, mesh)
        state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state, shardings)
    pool_shape = (config.num_kv_heads, config.num_layers, num_pages, page_size, config.head_dim)
    pool = abstract_array(mesh, pool_shape, jnp.dtype(dtype), PAGE_AXES)
    row = lambda *shape, dt=jnp.int32: abstract_array(mesh, (rows, *shape), dt, ("batch",) + (None,) * len(shape))
    view = PageView(page_table=row(pages_per_row), positions=row(1), lengths=row())
    mode = SamplingMode.from_params(1.0, 0, 1.0)

    def run(state, kv, *args):
        return pass_and_sample(nnx.merge(graphdef, state), None, kv, *args, mode=mode)  # no backend data

    # tokens, view, last; seeds, sequence ids, token index; temperature, top_p: one per row
    compiled, seconds = compile_for(jax.jit(run, donate_argnums=(1,)), state, PagedKV(k=pool, v=pool), row(1), view,
                                    row(), row(), row(), row(), row(dt=jnp.float32), row(dt=jnp.float32), mesh=mesh)
    return EngineStep(CompiledMemory.from_compiled(compiled, seconds), collectives(compiled.as_text()))
