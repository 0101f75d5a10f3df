"""ShapeDtypeStruct stand-ins, each with the sharding it would have on a mesh: what `jit(...).lower` needs
to compile a step for a machine without allocating the model."""

from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.attention import select_backend
from common.config import ModelConfig
from common.model import abstract_decoder
from common.sharding import named_sharding


def abstract_model_state(config: ModelConfig, mesh: Mesh, *, dtype="bfloat16", param_dtype="float32",
                         attention: str = "auto"):
    """(graphdef, state): the decoder's graph and its parameters as ShapeDtypeStructs placed on `mesh` by
    the logical-axis rules (what the trainer gets from `nnx.split(model)` on that mesh). attention: the
    backend, selected for `mesh` as the trainer selects it ("auto" on a TPU slice's devices: splash)."""
    backend = select_backend(attention, mesh=mesh)
    graphdef, state = nnx.split(abstract_decoder(config, dtype=dtype, param_dtype=param_dtype, attention=backend))

    def to_struct(var):
        sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], var.shape)
        return var.replace(jax.ShapeDtypeStruct(var.shape, var.dtype, sharding=sharding))

    return graphdef, jax.tree.map(to_struct, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def abstract_optimizer_state(optimizer, params):
    """ShapeDtypeStructs (with shardings) of `optimizer.init(params)` for abstract `params`: every subtree
    shaped like the parameters (Adam's mu, nu) is sharded like them, as an eager init on the real arrays
    gives (zeros_like keeps its argument's sharding); other leaves (step counts) are replicated."""
    shapes = jax.eval_shape(optimizer.init, params)
    param_def = jax.tree.structure(params)
    some = next(iter(jax.tree.leaves(params))).sharding
    replicated = NamedSharding(some.mesh, PartitionSpec())

    def like_params(node):
        return jax.tree.structure(node) == param_def

    def place(node):
        if like_params(node):
            return jax.tree.map(lambda s, p: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=p.sharding), node, params)
        return jax.ShapeDtypeStruct(node.shape, node.dtype, sharding=replicated)

    return jax.tree.map(place, shapes, is_leaf=lambda n: like_params(n) or isinstance(n, jax.ShapeDtypeStruct))


def abstract_array(mesh: Mesh, shape: Sequence[int], dtype, logical_axes: Sequence[str | None]):
    """A ShapeDtypeStruct of `shape` sharded by its logical axes (e.g. (None, "batch", None))."""
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=named_sharding(mesh, logical_axes, shape))
