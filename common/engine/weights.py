"""The engine's weights in an inference layout: a copy of the policy's parameters in the decode dtype, split
over `tensor` only (`common.sharding.INFERENCE_RULES`), made once per policy version.

The trainer keeps its parameters in float32 split over fsdp, where every use all-gathers them: once per
update that is the price of sharding the optimiser, but a rollout reads every weight at every decode step,
thousands of steps per update (Qwen2.5-7B on v5p-64: >= 25 ms of ICI time a step). The copy costs one
reshard per update and `inference_copy_bytes` of memory per device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from common.config import ModelConfig
from common.sharding import INFERENCE_RULES, logical_to_spec


def inference_shardings(state, mesh: Mesh):
    """The NamedSharding of each parameter of `state` (an nnx.State) under INFERENCE_RULES."""
    def sharding(var):
        spec = logical_to_spec(var.get_metadata()["logical_axes"], var.shape, mesh, INFERENCE_RULES)
        return var.replace(NamedSharding(mesh, spec))
    return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def cast_floats(state, dtype):
    """Every floating-point parameter of `state` in `dtype` (the rest as it is)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


def inference_copy(state, mesh: Mesh | None, dtype) -> nnx.State:
    """`state` in `dtype`, laid out by INFERENCE_RULES on `mesh` (None: one device, only the cast)."""
    if mesh is None:
        return jax.jit(cast_floats, static_argnums=1)(state, jnp.dtype(dtype))
    shardings = inference_shardings(state, mesh)
    return jax.jit(cast_floats, static_argnums=1, out_shardings=shardings)(state, jnp.dtype(dtype))


def inference_copy_bytes(config: ModelConfig, degrees: tuple[int, int, int], dtype) -> int:
    """Bytes of the copy on one device of a (data, fsdp, tensor) mesh."""
    from common.aot.estimate import param_bytes_per_device
    return param_bytes_per_device(config, degrees, str(jnp.dtype(dtype)), rules=INFERENCE_RULES)
