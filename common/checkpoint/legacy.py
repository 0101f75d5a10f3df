"""Checkpoints of earlier layouts restore into today's (`common.model`):

- `qrr-checkpoint-v2` (before 2026-12-06): one parameter tree per layer (`layers.{i}.…`); today's decoder
  stacks the layers' parameters on a leading axis. Each layer is read onto the mesh, then stacked.
- `qrr-checkpoint-v1` (before 2026-11-25): also q, k and v, and gate and up, were separate kernels. Each old
  kernel is read onto the mesh with its old sharding, then joined into the fused kernel with the new one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from common.config import ModelConfig
from common.sharding import named_sharding

FORMAT_V1 = "qrr-checkpoint-v1"
FORMAT_V2 = "qrr-checkpoint-v2"


def per_layer_target(target: dict, config: ModelConfig) -> dict:
    """Today's restore target (stacked layers: ShapeDtypeStructs [L, ...] with shardings) as v2's: one tree per
    layer, each leaf a row's shape with the stacked sharding less its (never split) layer axis."""
    def row(struct):
        sharding = struct.sharding
        if isinstance(sharding, NamedSharding):
            sharding = NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
        return jax.ShapeDtypeStruct(struct.shape[1:], struct.dtype, sharding=sharding)

    layer = jax.tree.map(row, target["layers"])
    return dict(target, layers={i: layer for i in range(config.num_layers)})


def stack_layers(params: dict, target: dict) -> dict:
    """v2 parameters (one tree per layer) -> today's, each stacked parameter placed as `target` says."""
    layers = [params["layers"][i] for i in sorted(params["layers"])]
    stacked = jax.tree.map(lambda struct, *rows: jax.device_put(jnp.stack(rows), struct.sharding),
                           target["layers"], *layers)
    return dict(params, layers=stacked)


def _v1_layer_shapes(config: ModelConfig) -> dict[str, dict[str, tuple[tuple[int, ...], tuple]]]:
    d, H, K, h, F = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim, config.intermediate_size
    attn = {"q_kernel": ((d, H, h), ("embed", "heads", "head_dim")),
            "k_kernel": ((d, K, h), ("embed", "kv_heads", "head_dim")),
            "v_kernel": ((d, K, h), ("embed", "kv_heads", "head_dim"))}
    if config.attention_bias:
        attn.update({"q_bias": ((H, h), ("heads", "head_dim")), "k_bias": ((K, h), ("kv_heads", "head_dim")),
                     "v_bias": ((K, h), ("kv_heads", "head_dim"))})
    mlp = {"gate_kernel": ((d, F), ("embed", "mlp")), "up_kernel": ((d, F), ("embed", "mlp"))}
    return {"attn": attn, "mlp": mlp}


def v1_target(target: dict, config: ModelConfig, mesh: Mesh | None) -> dict:
    """The restore target of a v1 checkpoint, from v2's (`per_layer_target`)."""
    shapes = _v1_layer_shapes(config)
    single = SingleDeviceSharding(jax.devices()[0])
    out = dict(target, layers={})
    for i, layer in target["layers"].items():
        attn = {k: v for k, v in layer["attn"].items() if k not in ("qkv_kernel", "qkv_bias")}
        mlp = {k: v for k, v in layer["mlp"].items() if k != "gate_up_kernel"}
        dtype = layer["attn"]["qkv_kernel"].dtype
        for group, new in (("attn", attn), ("mlp", mlp)):
            for name, (shape, axes) in shapes[group].items():
                sharding = single if mesh is None else named_sharding(mesh, axes, shape)
                new[name] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
        out["layers"][i] = dict(layer, attn=attn, mlp=mlp)
    return out


def fuse_v1(params: dict, target: dict, config: ModelConfig) -> dict:
    """v1 parameters -> v2's layout, each fused kernel placed with its sharding in `target` (v2's)."""
    K, G, h = config.num_kv_heads, config.num_heads // config.num_kv_heads, config.head_dim
    out = dict(params, layers={})
    for i, layer in params["layers"].items():
        attn, mlp = dict(layer["attn"]), dict(layer["mlp"])
        want = target["layers"][i]
        for suffix in ("kernel", "bias") if config.attention_bias else ("kernel",):
            q, k, v = (attn.pop(f"{n}_{suffix}") for n in "qkv")
            lead = q.shape[:-2]  # (d,) for kernels, () for biases
            fused = jnp.concatenate([q.reshape(*lead, K, G, h), k.reshape(*lead, K, 1, h),
                                     v.reshape(*lead, K, 1, h)], axis=-2)
            attn[f"qkv_{suffix}"] = jax.device_put(fused, want["attn"][f"qkv_{suffix}"].sharding)
        gate_up = jnp.stack([mlp.pop("gate_kernel"), mlp.pop("up_kernel")], axis=1)
        mlp["gate_up_kernel"] = jax.device_put(gate_up, want["mlp"]["gate_up_kernel"].sharding)
        out["layers"][i] = dict(layer, attn=attn, mlp=mlp)
    return out
