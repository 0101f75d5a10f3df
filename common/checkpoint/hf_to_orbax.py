"""A Hugging Face checkpoint -> our checkpoint (`common.checkpoint.orbax_io`, format v3), streamed: once, to a
shared place (a `gs://` bucket path, or a file system every worker mounts), so that pod workers read only
their own shards from it instead of each downloading the whole HF checkpoint.

Every parameter becomes the zarr array orbax restores (`params/<dotted path>/`, listed in `params/_METADATA`;
non-OCDBT layout), created empty and written one chunk at a time: a chunk's block is read out of the
memory-mapped safetensors (through the same mapping table as `hf_import`: transposes, fused q/k/v and gate/up,
layers stacked on a leading axis), cast, and written. Host memory therefore holds at most `IN_FLIGHT` chunks of
at most `chunk_bytes` each (x 2: the block as read and as cast), whatever the model's size; the safetensors
pages read on the way are file cache, which the kernel drops under pressure. Chunks are one layer deep and
at most `chunk_bytes` (16 MiB) large, so a worker restoring its shard reads only the chunks that overlap it.

The checkpoint is complete when `metadata.json` exists (written last; `orbax_io.is_checkpoint_dir` looks for
it): a conversion that dies half-way leaves no checkpoint, and running it again writes every array anew.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
from flax import nnx

from common.checkpoint.hf_import import hf_param_blocks
from common.checkpoint.orbax_io import FORMAT
from common.checkpoint.safetensors_io import open_checkpoint_files
from common.config import ModelConfig
from common.model import abstract_decoder, as_dtype

CHUNK_BYTES = 16 * 2**20
IN_FLIGHT = 4  # chunks written at once
# What an HF directory's tokenizer is made of (transformers reads them back from tokenizer/).
TOKENIZER_FILES = ("tokenizer*", "vocab.*", "merges.txt", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.*", "*.tiktoken")


def store_url(out: str | os.PathLike) -> str:
    """The tensorstore kvstore URL of a checkpoint directory: `gs://bucket/path/` as given, a local path as
    `file:///abs/path/`."""
    out = str(out)
    if out.startswith("gs://"):
        return out.rstrip("/") + "/"
    return "file://" + os.path.abspath(out).rstrip("/") + "/"


def chunk_shape(shape: tuple[int, ...], itemsize: int, target_bytes: int = CHUNK_BYTES,
                stacked: bool = False) -> tuple[int, ...]:
    """Chunks of at most `target_bytes` where a split can get there: one layer deep for a stacked parameter,
    then the largest axis halved until small enough. The second-to-last axis of a parameter of 3 or more axes
    is never split (the parts of a fused q/k/v or gate/up parameter lie there, and `hf_import` reads a block
    across all of them)."""
    chunks = list(shape)
    fixed = {len(shape) - 2} if len(shape) >= 3 else set()
    if stacked:
        chunks[0] = 1
        fixed.add(0)
    while math.prod(chunks) * itemsize > target_bytes:
        free = [i for i in range(len(chunks)) if i not in fixed and chunks[i] > 1]
        if not free:
            break
        i = max(free, key=lambda j: chunks[j])
        chunks[i] = (chunks[i] + 1) // 2
    return tuple(chunks)


def chunk_boxes(shape: tuple[int, ...], chunks: tuple[int, ...]):
    """Every chunk of an array of `shape` as a tuple of slices, in C order."""
    ranges = [range(0, n, c) for n, c in zip(shape, chunks)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunks, shape))


def zarr_dtype(dtype: np.dtype) -> str:
    return "bfloat16" if dtype.name == "bfloat16" else np.dtype(dtype).newbyteorder("<").str


def tree_metadata(leaves: dict[tuple[str, ...], tuple[int, ...]]) -> dict:
    """`params/_METADATA` as orbax's PyTree handler writes it for a tree of dicts of arrays (no OCDBT)."""
    tree = {str(path): {"key_metadata": [{"key": k, "key_type": 2} for k in path],  # 2: a dict key
                        "value_metadata": {"value_type": "jax.Array", "skip_deserialize": False,
                                           "write_shape": list(chunks)}}
            for path, chunks in leaves.items()}
    return {"tree_metadata": tree, "use_ocdbt": False, "use_zarr3": False,
            "store_array_data_equal_to_fill_value": True, "custom_metadata": None}


def write_array(url: str, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
                block: Callable[[tuple], np.ndarray], in_flight: int = IN_FLIGHT) -> int:
    """Creates the zarr array at `url` (replacing one there) and fills it chunk by chunk from `block(box)`,
    at most `in_flight` chunks on their way at once. Returns the bytes written."""
    import tensorstore as ts

    array = ts.open({"driver": "zarr", "kvstore": url,
                     "metadata": {"shape": list(shape), "chunks": list(chunks), "dtype": zarr_dtype(dtype),
                                  "compressor": None}},
                    create=True, delete_existing=True).result()
    pending: collections.deque = collections.deque()
    written = 0
    for box in chunk_boxes(shape, chunks):
        data = np.asarray(block(box), dtype=dtype)
        pending.append((array[box].write(data), data))  # the data stays referenced until written
        written += data.nbytes
        if len(pending) >= in_flight:
            pending.popleft()[0].result()
    for future, _ in pending:
        future.result()
    return written


def write_bytes(url: str, key: str, data: bytes) -> None:
    import tensorstore as ts

    ts.KvStore.open(url).result().write(key, data).result()


def delete_key(url: str, key: str) -> None:
    import tensorstore as ts

    ts.KvStore.open(url).result().delete_range(ts.KvStore.KeyRange(key, key + "\0")).result()


def leaf_path(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def checkpoint_dtype(hf_dir: Path) -> np.dtype:
    """The dtype of the checkpoint's first tensor (HF checkpoints store all of theirs in one)."""
    files = open_checkpoint_files(hf_dir)
    name = next(iter(files))
    return files[name].dtype(name)


def write_tokenizer(hf_dir: Path, url: str) -> bool:
    """Copies the HF directory's tokenizer files, as they are, to `tokenizer/` (where `load_pretrained` looks);
    False if it has none (a Qwen2 checkpoint then gets the offline Qwen2.5 tokenizer, as its HF directory would)."""
    files = sorted({f for pattern in TOKENIZER_FILES for f in hf_dir.glob(pattern) if f.is_file()})
    if not files:
        return False
    for f in files:
        write_bytes(url, f"tokenizer/{f.name}", f.read_bytes())
    return True


def convert_hf_to_orbax(hf_dir: str | os.PathLike, out: str | os.PathLike, *, dtype: str | None = None,
                        chunk_bytes: int = CHUNK_BYTES, in_flight: int = IN_FLIGHT,
                        log: Callable[[str], None] = print) -> dict:
    """Converts the HF directory `hf_dir` into our checkpoint at `out` (a path, or `gs://bucket/path`), stored
    in `dtype` (default: the checkpoint's own). Returns a summary: parameters, bytes, chunk bytes."""
    hf_dir = Path(hf_dir)
    config = ModelConfig.from_hf_json(hf_dir)
    stored = np.dtype(as_dtype(dtype)) if dtype else checkpoint_dtype(hf_dir)
    url = store_url(out)
    delete_key(url, "metadata.json")  # not a checkpoint until every array is written again
    _, state = nnx.split(abstract_decoder(config, param_dtype=stored))
    blocks = hf_param_blocks(hf_dir, config, state)
    leaves, total = {}, 0
    for path, var in nnx.to_flat_state(nnx.state(state, nnx.Param)):
        dotted = ".".join(str(k) for k in path)
        shape = tuple(var.shape)
        chunks = chunk_shape(shape, stored.itemsize, chunk_bytes, stacked=dotted.startswith("layers."))
        total += write_array(f"{url}params/{dotted}/", shape, stored, chunks, blocks[dotted], in_flight)
        leaves[leaf_path(dotted)] = chunks
        log(f"{dotted} {shape} {stored.name}: chunks {chunks}")
    write_bytes(url, "params/_METADATA", json.dumps(tree_metadata(leaves)).encode())
    write_bytes(url, "model_config.json", config.to_json().encode())
    tokenizer = write_tokenizer(hf_dir, url)
    metadata = {"format": FORMAT, "step": None, "source": str(hf_dir), "param_dtype": stored.name,
                "compute_dtype": stored.name, "converted_from": "hf"}
    write_bytes(url, "metadata.json", json.dumps(metadata, indent=2).encode())  # last: now it is a checkpoint
    return {"parameters": len(leaves), "bytes": total, "chunk_bytes": chunk_bytes, "in_flight": in_flight,
            "tokenizer": tokenizer, "url": url}
