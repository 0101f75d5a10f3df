"""`Decoder` -> Hugging Face directory (config.json + safetensors + tokenizer) that transformers loads."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from common.checkpoint.hf_import import get_by_path
from common.checkpoint.hf_mapping import expected_entries, hf_shape, part_shape, stacked_path, take_part, to_hf
from common.checkpoint.safetensors_io import write_safetensors
from common.model import Decoder, as_dtype

MAX_SHARD_BYTES = 4 * 1024**3


def _host_array(x: jax.Array) -> np.ndarray:
    if not x.is_fully_addressable:  # multi-host: every process gathers, process 0 writes
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def save_hf(model: Decoder, directory: str | Path, tokenizer=None, dtype: str | None = None) -> Path:
    """Writes config.json, model(-0000k-of-0000n).safetensors (+ index), and the tokenizer if given.
    Tensors are gathered one at a time. `dtype` (e.g. "bfloat16") overrides the parameters' dtype."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    state = nnx.state(model, nnx.Param)
    # The last parameter on the host: `expected_entries` lists a fused one's parts one after another, so it is
    # gathered once, not once per part.
    gathered: dict[str, np.ndarray] = {}

    def host(path: str, var, layer: int | None) -> np.ndarray:  # a stacked parameter: one layer's row
        if (path, layer) not in gathered:
            gathered.clear()
            gathered[path, layer] = _host_array(var[...] if layer is None else var[...][layer])
        return gathered[path, layer]

    items = []
    for ours, hf_name, transform, part in expected_entries(config):
        path, layer = stacked_path(ours)
        var = get_by_path(state, path)
        shape = tuple(var.shape) if layer is None else tuple(var.shape[1:])
        out_dtype = np.dtype(var[...].dtype if dtype is None else as_dtype(dtype))
        produce = lambda o=path, v=var, i=layer, t=transform, p=part: to_hf(take_part(host(o, v, i), p), t)
        items.append((hf_name, hf_shape(part_shape(shape, part), transform), out_dtype, produce))

    shards, current, size = [], [], 0
    for item in items:
        nbytes = int(np.prod(item[1])) * item[2].itemsize
        if current and size + nbytes > MAX_SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append(item)
        size += nbytes
    shards.append(current)

    is_writer = jax.process_index() == 0
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    for name, shard in zip(names, shards):
        if is_writer:
            write_safetensors(directory / name, shard, metadata={"format": "pt"})
        else:  # still take part in the gathers
            for _, _, _, produce in shard:
                produce()
    if not is_writer:
        return directory
    if len(shards) > 1:
        weight_map = {item[0]: name for name, shard in zip(names, shards) for item in shard}
        total = sum(int(np.prod(i[1])) * i[2].itemsize for i in items)
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    hf_config = config.to_hf_dict()
    hf_config["torch_dtype"] = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[
        str(items[0][2])]
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory
