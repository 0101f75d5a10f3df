"""One rules table from logical axis names to mesh axes, and the mesh itself.

Parameters and activations are annotated with logical names (`embed`, `heads`, `kv_heads`, `mlp`, `vocab`,
`batch`, `length`, ...). `LOGICAL_RULES` maps each name to mesh axes (`data`, `fsdp`, `tensor`). Changing the
parallelism of a run is an edit of that table or of the mesh shape — never of model code.

A mesh axis is dropped from a dimension it does not divide (SmolLM2's 9 heads on tensor=2, Qwen2.5's 2
KV heads on tensor=4): that dimension is then replicated over that axis instead of failing to compile, and
a `ShardingDropWarning` says so once per (logical axes, shape, mesh): a dropped `batch` axis means every
device of that axis computes the same sequences.
The fused q/k/v kernel is split over `kv_heads` (each shard holds whole groups: a kv head with its query
heads), so where tensor does not divide the kv heads the query projection is replicated too;
`common/mesh_presets.py` picks tensor degrees that divide both head counts.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis name -> mesh axes it is split over (in order), None = replicated.
LOGICAL_RULES: dict[str, tuple[str, ...] | None] = {
    # activations
    "batch": ("data", "fsdp"),
    "length": None,
    "act_embed": None,
    "act_heads": ("tensor",),
    "act_kv_heads": ("tensor",),
    "act_mlp": ("tensor",),
    "act_vocab": ("tensor",),
    "cache_length": None,
    # parameters
    "layers": None,
    "embed": ("fsdp",),
    "vocab": ("tensor", "fsdp"),  # the embedding table: vocab-sharded, so a lookup needs no all-gather
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": None,
    "mlp": ("tensor",),
    "norm": None,
}

# The rollout engine's copy of the weights (`common.engine.weights`): split over tensor only, whole on every
# data and fsdp shard, so a decode step reads its weights locally instead of all-gathering the trainer's
# fsdp-split ones every step. Activations as in LOGICAL_RULES.
INFERENCE_RULES: dict[str, tuple[str, ...] | None] = {**LOGICAL_RULES, "embed": None, "vocab": ("tensor",)}


def batch_shards(mesh: Mesh | None) -> int:
    """How many ways `mesh` splits a batch (the mesh axes of the "batch" rule; 1 without a mesh)."""
    return 1 if mesh is None else math.prod(mesh.shape[a] for a in batch_axes(mesh))


def make_mesh(shape: dict[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor). `shape` gives each axis's size; -1 = all remaining devices.

    `make_mesh({"fsdp": -1})` puts every device on fsdp; `make_mesh({"data": 2, "fsdp": 2, "tensor": 2})`.
    Axes are Auto (GSPMD propagation from the annotations), on any backend (CPU, GPU, TPU).
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = dict(shape or {"fsdp": -1})
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise KeyError(f"unknown mesh axis {sorted(unknown)}; the mesh axes are {MESH_AXES}")
    sizes = [shape.get(a, 1) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not split over the fixed mesh axes {shape}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, {len(devices)} are available"
        )
    try:
        device_grid = jax.experimental.mesh_utils.create_device_mesh(sizes, devices)
    except Exception:  # CPU / fake devices have no physical topology
        device_grid = np.asarray(devices).reshape(sizes)
    return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


class ShardingDropWarning(UserWarning):
    """A mesh axis was dropped from a dimension it does not divide: that dimension is replicated over it."""


_warned: set[tuple] = set()  # (logical axes, shape, mesh sizes) already warned about


def _warn_dropped(logical_axes, shape, mesh, dropped: list[tuple[str, str, int]]) -> None:
    """One warning per (logical axes, shape, mesh sizes): which mesh axes a dimension could not be split over."""
    key = (tuple(logical_axes), tuple(shape), tuple(sorted(dict(mesh.shape).items())))
    if key in _warned:
        return
    _warned.add(key)
    what = "; ".join(f"{name!r} ({size}) not split over mesh axis {axis!r} ({mesh.shape[axis]})"
                     for name, axis, size in dropped)
    warnings.warn(f"array with logical axes {tuple(logical_axes)} and shape {tuple(shape)}: {what}, so it is "
                  "replicated over that axis" + (" and every device on it computes the same rows"
                                                 if any(name == "batch" for name, _, _ in dropped) else ""),
                  ShardingDropWarning, stacklevel=3)


def logical_to_spec(
    logical_axes: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
    rules: dict[str, tuple[str, ...] | None] = LOGICAL_RULES,
    warn: bool = True,
) -> PartitionSpec:
    """PartitionSpec for an array whose dimensions carry `logical_axes`.

    With `shape` and `mesh`, mesh axes of size 1 are left out and a mesh axis that does not divide its
    dimension is dropped (the dimension is replicated over it; `warn`: a `ShardingDropWarning`, once per
    logical axes, shape and mesh). A mesh axis is used at most once.
    """
    used: set[str] = set()
    dropped: list[tuple[str, str, int]] = []  # (logical name, mesh axis, dimension size)
    spec = []
    for i, name in enumerate(logical_axes):
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(rules)}")
        axes = []
        size = 1
        for axis in rules[name] or ():
            if axis in used:
                continue
            if mesh is not None:
                n = mesh.shape[axis]
                if n == 1:
                    continue
                if shape is not None and shape[i] % (size * n):
                    dropped.append((name, axis, shape[i]))
                    continue
                size *= n
            axes.append(axis)
        used.update(axes)
        spec.append(tuple(axes) if len(axes) > 1 else (axes[0] if axes else None))
    if dropped and warn:
        _warn_dropped(logical_axes, shape, mesh, dropped)
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical_axes, shape, mesh))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes of the "batch" rule that split something (size > 1), in the rule's order."""
    return tuple(a for a in LOGICAL_RULES["batch"] or () if a in mesh.shape and mesh.shape[a] > 1)


def manual_axes() -> frozenset[str]:
    """Mesh axes the code being traced is manual over (inside `shard_map`): its arrays are already those axes'
    shards, so a sharding annotation must not name them."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return frozenset()
    return frozenset(a for a, t in zip(mesh.axis_names, mesh.axis_types) if t == AxisType.Manual)


def without_axes(spec: PartitionSpec, axes: frozenset[str]) -> PartitionSpec:
    """`spec` with the mesh axes `axes` left out of every dimension."""
    def keep(entry):
        if entry is None:
            return None
        kept = tuple(a for a in (entry if isinstance(entry, tuple) else (entry,)) if a not in axes)
        return kept if len(kept) > 1 else (kept[0] if kept else None)
    return PartitionSpec(*map(keep, spec))


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Sharding annotation for an activation inside jit; a no-op when no mesh is in context. Inside
    `shard_map` the axes it is manual over are left out (the array is already one of their shards)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or not set(MESH_AXES) <= set(mesh.axis_names):
        return x
    manual = manual_axes()
    if manual >= set(mesh.axis_names):
        return x
    spec = without_axes(logical_to_spec(logical_axes, x.shape, mesh, warn=not manual), manual)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
