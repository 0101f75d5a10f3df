"""Decode-step weight products on the CPU through our own kernels (cpu_products.cc), as XLA FFI calls.

A decode step multiplies a few rows by every weight matrix once. XLA:CPU reads a row-major weight on one
thread and packs it again for every product, so a few rows ran far below the memory bandwidth (float32) or
the compute peak (bfloat16 at 32 rows). Here every weight is packed once into panels of 32 columns (`pack`,
plain jax ops that XLA hoists out of the decode loop: the decode program holds a packed copy of the weights
while it runs), and the kernels stream the panels over XLA's intra-op threads with the rows' accumulators in
registers; bfloat16 through vdpbf16ps. They are used only where they measured faster (`routed`): under a KV
cache (sampling), on the CPU backend of an x86 CPU with AVX-512 bf16, outside a mesh, up to `ROWS_FASTER`
rows. Everything else, and every machine where the kernels cannot be built, takes XLA's products: the results
agree to float32 rounding (tests/common/test_cpu_products.py).

The source is compiled on first use with the system C++ compiler (`-O3 -march=native`) into a cache
directory keyed by the source, jaxlib and the CPU; `python -m common.kernels.cpu_products` builds it ahead
(tools/setup.sh does). QRR_CPU_KERNELS=0 turns the kernels off for programs traced after it is set.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("cpu_products.cc")
PANEL = 32  # columns per packed panel (kPanel in the source)
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w"]
_TARGETS = {"float32": "QrrPackedF32", "bfloat16": "QrrPackedBf16"}
_PACK_TARGETS = {"float32": "QrrPackF32", "bfloat16": "QrrPackBf16"}


def enabled() -> bool:
    return os.environ.get("QRR_CPU_KERNELS", "1") != "0"


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return platform.machine() + flags


def supported_cpu() -> bool:
    """x86-64 with AVX-512 F and BF16: the instructions the kernels are written in."""
    flags = set(_cpu_signature().split())
    return platform.machine() in ("x86_64", "AMD64") and {"avx512f", "avx512_bf16"} <= flags


def library_path() -> Path:
    """Where the built library for this source, jaxlib and CPU lives (built or not)."""
    import jaxlib

    key = hashlib.sha256(SOURCE.read_bytes() + jaxlib.__version__.encode() + " ".join(FLAGS).encode()
                         + _cpu_signature().encode()).hexdigest()[:16]
    root = Path(os.environ.get("QRR_KERNEL_CACHE")
                or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qwen-rl-research" / "kernels")
    return root / f"cpu_products-{key}.so"


def build() -> Path:
    """Compiles the kernels (if not yet built) and returns the library's path. Raises RuntimeError with the
    compiler's message when there is no compiler or it fails."""
    import jax.ffi

    path = library_path()
    if path.exists():
        return path
    if not supported_cpu():
        raise RuntimeError("they need an x86-64 CPU with AVX-512 BF16 (avx512_bf16 in /proc/cpuinfo)")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed:\n{' '.join(cmd)}\n{result.stderr[-4000:]}")
        os.replace(out, path)  # atomic: a concurrent build leaves one complete library
    return path


@functools.cache
def available() -> bool:
    """The kernels are built and registered with XLA (once per process; `routed` also asks `enabled`). Warns
    once when they cannot be built; the products then stay XLA's."""
    import jax
    import jax.ffi

    try:
        library = ctypes.cdll.LoadLibrary(str(build()))
    except (RuntimeError, OSError) as e:
        warnings.warn(f"CPU decode kernels unavailable, using XLA's products: {e}", RuntimeWarning, stacklevel=2)
        return False
    global _REGISTERED
    if not _REGISTERED:  # once per process, even if `available` is asked again after a cache_clear
        for name in (*_TARGETS.values(), *_PACK_TARGETS.values()):
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
        _REGISTERED = True
    return True


_REGISTERED = False


def routed(rows: int, weight_dtype) -> bool:
    """Whether a sampling product of `rows` rows with weights of `weight_dtype` runs on these kernels: on the
    CPU backend, outside a mesh (a sharded product stays XLA's), for the rows where the kernels measured
    faster than XLA's products (`ROWS_FASTER`)."""
    import jax.numpy as jnp

    if rows > ROWS_FASTER.get(jnp.dtype(weight_dtype).name, 0) or not enabled():
        return False
    return local_cpu() and available()


def local_cpu() -> bool:
    """Tracing for the CPU backend outside a mesh (an ahead-of-time compile for TPU runs under one)."""
    import jax

    return jax.default_backend() == "cpu" and jax.sharding.get_abstract_mesh().empty


# Most rows at which the kernels were measured faster than XLA's products (docs/benchmarks.md, 2 cores: at every
# batch from 1 to 128, in both dtypes, counting the packing; larger batches were not measured).
ROWS_FASTER = {"float32": 128, "bfloat16": 128}


def pack(w, transposed: bool = False):
    """w [K, N] (transposed: [N, K], a tied embedding read as the head) -> panels of PANEL columns, zero-padded:
    float32 [P, K, PANEL]; bfloat16 [P, K/2, PANEL, 2] (rows k, k+1 interleaved per column; K padded to
    even). On the kernels' threads: XLA's own transposes took ~0.3 s for SmolLM2-135M in float32."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(w.dtype)
    if dtype.name not in _PACK_TARGETS:
        raise ValueError(f"the CPU kernels take float32 or bfloat16 weights, got {dtype.name}")
    if not available():
        raise RuntimeError("the CPU kernels could not be built (see the warning above)")
    N, K = w.shape if transposed else w.shape[::-1]
    P = -(-N // PANEL)
    shape = (P, (K + 1) // 2, PANEL, 2) if dtype == jnp.bfloat16 else (P, K, PANEL)
    return jax.ffi.ffi_call(_PACK_TARGETS[dtype.name], jax.ShapeDtypeStruct(shape, dtype),
                            vmap_method="sequential")(w, transposed=transposed)


def packed_matmul(x, panels, n: int):
    """x [M, K] . the packed weight `panels` (from `pack`) -> float32 [M, n], n the weight's columns before
    padding. x is converted to the panels' dtype (in the decoder they are the same)."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(panels.dtype)
    if dtype.name not in _TARGETS:
        raise ValueError(f"the CPU kernels take float32 or bfloat16 weights, got {dtype.name}")
    M, K = x.shape
    pairs = dtype == jnp.bfloat16
    packed_k = 2 * panels.shape[1] if pairs else panels.shape[1]
    if packed_k != K + (K % 2 if pairs else 0):
        raise ValueError(f"x [M={M}, K={K}] does not match the packed weight {panels.shape} ({dtype.name})")
    if not available():
        raise RuntimeError("the CPU kernels could not be built (see the warning above)")
    x = jnp.pad(x.astype(dtype), ((0, 0), (0, packed_k - K)))
    out = jax.ffi.ffi_call(_TARGETS[dtype.name], jax.ShapeDtypeStruct((M, panels.shape[0] * PANEL), jnp.float32),
                           vmap_method="sequential")(x, panels)
    return out[:, :n]


def matmul(x, w, transposed: bool = False):
    """x [M, K] . w [K, N] (or w [N, K] transposed) -> float32 [M, N] on the kernels, packing w first."""
    if (w.shape[1] if transposed else w.shape[0]) != x.shape[1]:
        raise ValueError(f"contracting sizes differ: x {x.shape}, w {w.shape} (transposed={transposed})")
    return packed_matmul(x, pack(w, transposed), w.shape[0] if transposed else w.shape[1])


if __name__ == "__main__":
    print(f"built {build()}")
