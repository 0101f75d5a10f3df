"""The repository's own checkpoint: parameters (orbax) + model config + tokenizer + metadata.

Both research packages read it: this is how a policy trained in `rl_scaling` reaches `agent_safety`.

    <dir>/params/             orbax PyTree of the decoder's parameters (sharded save/restore)
    <dir>/model_config.json   common.config.ModelConfig
    <dir>/metadata.json       {"format": ..., "step": ..., "source": ..., "param_dtype": ..., ...}
    <dir>/tokenizer/          the HF tokenizer files (if one was given)

A save goes to `<dir>.partial` and is renamed into place when complete, so a killed save never leaves
a half-written checkpoint under the final name. With several processes, every process writes its shards
under the same `.partial` name, process 0 alone writes the metadata and renames, and all wait for the
rename before going on.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from common.checkpoint.legacy import FORMAT_V1, FORMAT_V2, fuse_v1, per_layer_target, stack_layers, v1_target
from common.config import ModelConfig
from common.distributed import barrier, is_main_process
from common.model import Decoder, abstract_decoder, as_dtype
from common.sharding import named_sharding

# v3: the layers' parameters stacked on a leading axis; v2 (a tree per layer) and v1 (unfused q/k/v and
# gate/up kernels) still load (legacy.py).
FORMAT = "qrr-checkpoint-v3"


def is_checkpoint_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "metadata.json").exists() and (path / "params").is_dir()


def param_tree(model: Decoder) -> dict:
    """The decoder's parameters as a plain nested dict of arrays (list indices as int keys)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def abstract_param_tree(config: ModelConfig, param_dtype, mesh: Mesh | None) -> dict:
    """ShapeDtypeStructs with target shardings for restoring straight onto the mesh."""
    abstract = abstract_decoder(config, param_dtype=param_dtype)
    state = nnx.state(abstract, nnx.Param)
    single = SingleDeviceSharding(jax.devices()[0])

    def to_struct(var):
        sharding = single if mesh is None else named_sharding(mesh, var.get_metadata()["logical_axes"], var.shape)
        return jax.ShapeDtypeStruct(var.shape, var.dtype, sharding=sharding)

    return nnx.to_pure_dict(jax.tree.map(to_struct, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def save_params(path: Path, params: dict) -> None:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()


def restore_params(path: Path, target: dict) -> dict:
    return ocp.StandardCheckpointer().restore(path, target)


def checkpoint_metadata(model: Decoder, step: int | None, source: str | None,
                        extra: dict[str, Any] | None = None) -> dict:
    """What `metadata.json` holds for a checkpoint of `model`: format, step, source and dtypes."""
    param_dtype = str(jax.tree.leaves(param_tree(model))[0].dtype)
    return {"format": FORMAT, "step": step, "source": source, "param_dtype": param_dtype,
            "compute_dtype": str(model.dtype), **(extra or {})}


def save_checkpoint(directory: str | Path, model: Decoder, tokenizer=None, *, step: int | None = None,
                    source: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Writes the checkpoint atomically; overwrites an existing one at `directory` only once complete."""
    directory = Path(directory).absolute()
    # One name for every process (a per-process timestamp would split a multi-host save in two).
    partial = directory.with_name(f"{directory.name}.partial")
    if is_main_process() and partial.exists():  # left by a save that was killed
        shutil.rmtree(partial)
    barrier(f"checkpoint-start:{directory}")
    save_params(partial / "params", param_tree(model))
    if is_main_process():
        (partial / "model_config.json").write_text(model.config.to_json())
        (partial / "metadata.json").write_text(json.dumps(checkpoint_metadata(model, step, source, extra), indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(partial / "tokenizer")
        if directory.exists():
            old = directory.with_name(f"{directory.name}.old-{int(time.time() * 1e6)}")
            directory.rename(old)
            partial.rename(directory)
            shutil.rmtree(old)
        else:
            partial.rename(directory)
    barrier(f"checkpoint-renamed:{directory}")
    return directory


def read_metadata(directory: str | Path) -> dict:
    return json.loads((Path(directory) / "metadata.json").read_text())


def load_checkpoint(directory: str | Path, *, dtype="float32", param_dtype=None,
                    mesh: Mesh | None = None) -> Decoder:
    """Restores a decoder saved by `save_checkpoint`, each parameter placed with its mesh sharding.
    `param_dtype` defaults to the dtype it was saved in."""
    directory = Path(directory)
    if not is_checkpoint_dir(directory):
        raise FileNotFoundError(f"{directory} is not a checkpoint directory (needs metadata.json and params/)")
    config = ModelConfig.from_json((directory / "model_config.json").read_text())
    metadata = read_metadata(directory)
    saved_dtype = metadata["param_dtype"]
    target = abstract_param_tree(config, saved_dtype, mesh)
    if metadata.get("format") == FORMAT:
        params = restore_params(directory / "params", target)
    elif metadata.get("format") in (FORMAT_V2, FORMAT_V1):
        v2 = per_layer_target(target, config)
        if metadata["format"] == FORMAT_V1:
            params = fuse_v1(restore_params(directory / "params", v1_target(v2, config, mesh)), v2, config)
        else:
            params = restore_params(directory / "params", v2)
        params = stack_layers(params, target)
    else:
        raise ValueError(f"{directory}: unknown checkpoint format {metadata.get('format')!r}; this version "
                         f"reads {FORMAT!r}, {FORMAT_V2!r} and {FORMAT_V1!r}")
    model = abstract_decoder(config, dtype=dtype, param_dtype=saved_dtype)
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params)
    model = nnx.merge(graphdef, state)
    if param_dtype is not None and as_dtype(param_dtype) != as_dtype(saved_dtype):
        cast = lambda x: x.astype(as_dtype(param_dtype))
        nnx.update(model, jax.tree.map(cast, nnx.state(model, nnx.Param)))
    return model
