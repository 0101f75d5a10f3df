"""Lower and compile without running; read the per-device bytes XLA plans for the program."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import jax
from jax.sharding import Mesh


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """Per-device bytes from `compiled.memory_analysis()`.

    arguments: inputs (parameters, optimiser state, batch); outputs: results not aliased to an input;
    temporaries: everything else live at the peak (activations, gradients, XLA's scratch);
    alias: output bytes that reuse donated input buffers; total = arguments + outputs - alias + temporaries
    (+ generated code), the program's peak as XLA plans it.
    """

    arguments: int
    outputs: int
    temporaries: int
    alias: int
    generated_code: int
    compile_seconds: float

    @property
    def total(self) -> int:
        return self.arguments + self.outputs - self.alias + self.temporaries + self.generated_code

    @classmethod
    def from_compiled(cls, compiled, compile_seconds: float) -> "CompiledMemory":
        stats = compiled.memory_analysis()
        if stats is None:
            raise RuntimeError("this backend's compiler reports no memory analysis")
        return cls(arguments=int(stats.argument_size_in_bytes), outputs=int(stats.output_size_in_bytes),
                   temporaries=int(stats.temp_size_in_bytes), alias=int(stats.alias_size_in_bytes),
                   generated_code=int(stats.generated_code_size_in_bytes), compile_seconds=compile_seconds)


def compile_for(fn, *abstract_args, mesh: Mesh):
    """(compiled, seconds): `fn` (a jitted function) lowered for ShapeDtypeStruct args on `mesh` and
    compiled for the mesh's devices. Nothing runs and no device memory is touched."""
    start = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = fn.lower(*abstract_args).compile()
    return compiled, time.perf_counter() - start


def compiled_memory(fn, *abstract_args, mesh: Mesh) -> CompiledMemory:
    compiled, seconds = compile_for(fn, *abstract_args, mesh=mesh)
    return CompiledMemory.from_compiled(compiled, seconds)


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_HBM_OOM = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM \(([\d.]+)([KMGT]?)\)")


def compile_refusal(err: Exception) -> dict | None:
    """When `err` is the compiler refusing a program that cannot fit the device's memory (XLA's
    RESOURCE_EXHAUSTED), {"message", "required_temporaries", "available"} (bytes, None when the message does
    not say); else None."""
    text = str(err)
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    found = _HBM_OOM.search(text)
    required = available = None
    if found:
        required = int(float(found.group(1)) * _UNITS[found.group(2)])
        available = int(float(found.group(3)) * _UNITS[found.group(4)])
    return {"message": text.splitlines()[0][:300], "required_temporaries": required, "available": available}


class ProgramCache:
    """Results of single compiles, one JSON file each, so an interrupted plan resumes where it stopped."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    def get_or_compile(self, key: str, compile_fn) -> dict:
        path = self.directory / f"{key}.json" if self.directory else None
        if path is not None and path.exists():
            return json.loads(path.read_text())
        result = compile_fn() | {"code_commit": code_commit()}
        if path is not None:
            path.write_text(json.dumps(result, indent=2))
        return result


def code_commit() -> str | None:
    """The repository's HEAD commit (short), with "+changes" when the tree is dirty; None outside git. Cached
    results carry it: a program compiled from older code is named as such in the plan."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def measured(compile_fn) -> dict:
    """`compile_fn()`'s CompiledMemory as a dict, or {"refused": {...}, "compile_seconds"} when the compiler
    says the program cannot fit the device."""
    start = time.perf_counter()
    try:
        return dataclasses.asdict(compile_fn())
    except Exception as err:
        refusal = compile_refusal(err)
        if refusal is None:
            raise
        return {"refused": refusal, "compile_seconds": time.perf_counter() - start}
    finally:
        jax.clear_caches()  # a plan compiles many big programs: keep none of them (GBs of host memory each)
