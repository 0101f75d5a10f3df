"""Streaming safetensors reader and writer (numpy, memory-mapped, bfloat16 included).

Reading maps the file and hands out lazy views: a sharded load copies only the slice each device needs, so
no checkpoint (nor any single tensor) has to sit whole in host memory. Writing goes tensor by tensor.
The format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class CorruptCheckpointError(ValueError):
    """A checkpoint file is truncated, has a malformed header, or is not what it claims to be."""


class SafetensorsFile:
    """One .safetensors file: `names()`, `shape(name)`, `dtype(name)`, `view(name)` (lazy np.memmap view)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such safetensors file: {self.path}")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptCheckpointError(f"{self.path}: file is {size} bytes, too short for a header")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(size - 8, 100_000_000):
                raise CorruptCheckpointError(
                    f"{self.path}: header length {header_len} exceeds the file size {size} (truncated or not safetensors)")
            try:
                header = json.loads(f.read(header_len))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CorruptCheckpointError(f"{self.path}: malformed JSON header ({e})") from None
        header.pop("__metadata__", None)
        self._data_start = 8 + header_len
        self._entries = header
        data_size = size - self._data_start
        for name, e in header.items():
            if e.get("dtype") not in _DTYPES:
                raise CorruptCheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {e.get('dtype')!r}")
            begin, end = e["data_offsets"]
            nbytes = int(np.prod(e["shape"], dtype=np.int64)) * _DTYPES[e["dtype"]].itemsize
            if end - begin != nbytes:
                raise CorruptCheckpointError(
                    f"{self.path}: tensor {name!r} spans {end - begin} bytes but its shape {e['shape']} needs {nbytes}")
            if end > data_size:
                raise CorruptCheckpointError(
                    f"{self.path}: tensor {name!r} ends at byte {end} of the data but the file holds only "
                    f"{data_size} (truncated file)")
        self._mmap = None

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return _DTYPES[self._entries[name]["dtype"]]

    def view(self, name: str) -> np.ndarray:
        """A read-only memory-mapped array: nothing is read until it is sliced or copied."""
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        begin, end = self._entries[name]["data_offsets"]
        raw = self._mmap[self._data_start + begin:self._data_start + end]
        return raw.view(self.dtype(name)).reshape(self.shape(name))


def open_checkpoint_files(directory: str | Path) -> dict[str, SafetensorsFile]:
    """tensor name -> the file holding it, for `model.safetensors` or a sharded `*.safetensors.index.json`."""
    directory = Path(directory)
    index_files = sorted(directory.glob("*.safetensors.index.json"))
    if index_files:
        try:
            weight_map = json.loads(index_files[0].read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CorruptCheckpointError(f"{index_files[0]}: not a safetensors index ({e})") from None
        files = {fname: SafetensorsFile(directory / fname) for fname in sorted(set(weight_map.values()))}
        out = {}
        for name, fname in weight_map.items():
            if name not in files[fname]._entries:
                raise CorruptCheckpointError(f"{fname} lacks tensor {name!r} that the index points to it for")
            out[name] = files[fname]
        return out
    singles = sorted(directory.glob("*.safetensors"))
    if not singles:
        raise FileNotFoundError(f"no *.safetensors file or index in {directory}")
    out = {}
    for path in singles:
        f = SafetensorsFile(path)
        for name in f.names():
            out[name] = f
    return out


def write_safetensors(path: str | Path, tensors: Iterable[tuple[str, tuple[int, ...], np.dtype,
                                                                  Callable[[], np.ndarray]]],
                      metadata: dict[str, str] | None = None) -> None:
    """Writes tensors one at a time: each item is (name, shape, dtype, produce) and `produce()` is called
    only when that tensor's bytes are written, so at most one tensor is in memory. Atomic (tmp + rename)."""
    items = list(tensors)
    header, offset = {}, 0
    for name, shape, dtype, _ in items:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype, produce in items:
            arr = np.ascontiguousarray(produce(), dtype=np.dtype(dtype))
            if arr.shape != tuple(shape):
                raise ValueError(f"tensor {name!r}: produced shape {arr.shape}, declared {tuple(shape)}")
            f.write(arr.tobytes())
    tmp.replace(path)
