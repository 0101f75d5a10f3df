"""Hugging Face directory (config.json + safetensors) -> `Decoder`, tensor by tensor, each placed directly
with its target sharding. With a mesh, each device's shard is copied out of the memory-mapped file on its
own: neither the checkpoint nor any whole tensor is gathered in one host's memory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from common.checkpoint.hf_mapping import (PART_AXIS, expected_entries, hf_shape, is_ignored, part_range, part_shape,
                                           stacked_path, to_ours)
from common.checkpoint.safetensors_io import open_checkpoint_files
from common.config import ModelConfig
from common.model import Decoder, abstract_decoder, as_dtype
from common.sharding import named_sharding


class MissingTensorError(KeyError):
    pass


class UnexpectedTensorError(KeyError):
    pass


class ShapeMismatchError(ValueError):
    pass


def place(array_fn, shape, dtype, logical_axes, mesh: Mesh | None) -> jax.Array:
    """Materialises one parameter. `array_fn(index)` returns the numpy block for a device's index."""
    if mesh is None:
        return jax.device_put(np.asarray(array_fn(tuple(slice(None) for _ in shape)), dtype=dtype))
    sharding = named_sharding(mesh, logical_axes, shape)
    return jax.make_array_from_callback(shape, sharding, lambda idx: np.asarray(array_fn(idx), dtype=dtype))


def set_by_path(state: nnx.State, dotted: str, value) -> None:
    node = state
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = nnx.Param(value, **node[keys[-1]].get_metadata())


def get_by_path(state: nnx.State, dotted: str) -> nnx.Variable:
    node = state
    for k in dotted.split("."):
        node = node[int(k) if k.isdigit() else k]
    return node


def hf_param_blocks(directory: str | Path, config: ModelConfig, state: nnx.State) -> dict[str, Callable]:
    """Our parameter path (stacked: "layers.attn.qkv_kernel") -> `block(idx)`, the numpy block `idx` of that
    parameter in the checkpoint's dtype, read from the memory-mapped files only when called. `state`: the
    (abstract) decoder's state, for the shapes. Raises when a tensor is missing, unexpected or misshapen."""
    directory = Path(directory)
    files = open_checkpoint_files(directory)
    entries = expected_entries(config)

    missing = [hf for _, hf, _, _ in entries if hf not in files]
    if missing:
        raise MissingTensorError(
            f"{directory}: checkpoint lacks {len(missing)} tensor(s) the config needs, e.g. {missing[:5]}")
    known = {hf for _, hf, _, _ in entries}
    unexpected = [n for n in files if n not in known and not is_ignored(n, config)]
    if unexpected:
        raise UnexpectedTensorError(
            f"{directory}: checkpoint has {len(unexpected)} tensor(s) this config does not use, e.g. "
            f"{unexpected[:5]} (wrong config.json, e.g. attention_bias or tie_word_embeddings?)")

    parts_of: dict[str, dict] = {}  # our stacked path -> {layer (None outside the layers): [(part, lazy view)]}
    for ours, hf_name, transform, part in entries:
        path, layer = stacked_path(ours)
        shape = tuple(get_by_path(state, path).shape)
        target_shape = part_shape(shape if layer is None else shape[1:], part)
        found, wanted = files[hf_name].shape(hf_name), hf_shape(target_shape, transform)
        if found != wanted:
            raise ShapeMismatchError(
                f"tensor {hf_name!r} has shape {found} in the checkpoint, but the config needs {wanted}")
        view = to_ours(files[hf_name].view(hf_name), transform, target_shape)
        parts_of.setdefault(path, {}).setdefault(layer, []).append((part, view))
    out = {}
    for path, layers in parts_of.items():
        blocks = {layer: _param_block(parts) for layer, parts in layers.items()}
        if None in blocks:
            out[path] = blocks[None]
        else:  # stacked layers: a block is its rows' blocks, one per layer
            out[path] = lambda idx, blocks=blocks: np.stack([blocks[i](idx[1:]) for i in range(len(blocks))[idx[0]]])
    return out


def load_hf_decoder(directory: str | Path, *, dtype="float32", param_dtype=None, mesh: Mesh | None = None,
                    config: ModelConfig | None = None) -> Decoder:
    """Reads an HF checkpoint directory into a Decoder. `param_dtype` defaults to `dtype`."""
    directory = Path(directory)
    config = config or ModelConfig.from_hf_json(directory)
    param_dtype = as_dtype(param_dtype or dtype)
    abstract = abstract_decoder(config, dtype=dtype, param_dtype=param_dtype)
    graphdef, state = nnx.split(abstract)
    for path, block in hf_param_blocks(directory, config, state).items():
        target = get_by_path(state, path)
        value = place(block, tuple(target.shape), param_dtype, target.get_metadata()["logical_axes"], mesh)
        set_by_path(state, path, value)
    return nnx.merge(graphdef, state)


def _param_block(parts: list):
    """idx -> the block `idx` of one (unstacked) parameter from its parts' lazy views [(part, view)]."""
    if parts[0][0] is None:
        return lambda idx, view=parts[0][1]: view[idx]
    # a fused parameter: its parts in their order along PART_AXIS
    whole = list(parts[0][1].shape)
    whole[PART_AXIS] = sum(v.shape[PART_AXIS] for _, v in parts)
    views = [v for p, v in sorted(parts, key=lambda pv: part_range(pv[0], tuple(whole)))]
    return lambda idx, views=views: _fused_block(views, idx)


def _fused_block(views: list, idx: tuple) -> np.ndarray:
    """A device's block of a fused parameter: the same block of each part, joined along PART_AXIS. That axis
    is never sharded (its logical axis is None), so every block spans all parts."""
    full = sum(v.shape[PART_AXIS] for v in views)
    if idx[PART_AXIS].indices(full) != (0, full, 1):
        raise ValueError(f"the parts axis of a fused parameter must not be sharded; got block {idx}")
    return np.concatenate([v[idx] for v in views], axis=PART_AXIS)
