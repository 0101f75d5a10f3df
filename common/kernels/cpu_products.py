"""Decode-step weight products on the CPU through our own kernels (cpu_products.cc), as XLA FFI calls.

A decode step multiplies a few rows by every weight matrix once, so its cost is reading the weights. XLA:CPU
reads them on one thread, and runs a bfloat16 product with one row over a float32 copy of the weights; these
kernels read the weights once in their stored dtype over XLA's intra-op threads (docs/benchmarks.md has the
measurements). They are used only where they measured faster (`routed`): under a KV cache (sampling), on
the CPU backend, outside a mesh, for at most `MAX_ROWS` rows. Everything else, and every machine where the
kernels cannot be built, takes XLA's products: the results agree to float32 rounding (tests/common/
test_cpu_products.py).

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
MAX_ROWS = 16  # the kernels' limit (kMaxRows in the source)
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-w"]
_TARGETS = {(False, "float32"): "QrrXwF32", (False, "bfloat16"): "QrrXwBf16",
            (True, "float32"): "QrrXwtF32", (True, "bfloat16"): "QrrXwtBf16"}


def enabled() -> bool:
    return os.environ.get("QRR_CPU_KERNELS", "1") != "0"


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return platform.machine() + flags


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
        for name in _TARGETS.values():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
        _REGISTERED = True
    return True


_REGISTERED = False


def routed(rows: int, weight_dtype, transposed: bool = False) -> bool:
    """Whether a sampling product of `rows` rows with weights of `weight_dtype` (transposed: the head read
    from a tied embedding) runs on these kernels: on the CPU backend, outside a mesh (a sharded product stays
    XLA's), for the rows and dtypes where the kernels measured faster than XLA (`ROWS_FASTER`)."""
    import jax.numpy as jnp

    if rows > ROWS_FASTER.get((jnp.dtype(weight_dtype).name, transposed), 0) or not enabled():
        return False
    return local_cpu() and available()


def local_cpu() -> bool:
    """Tracing for the CPU backend outside a mesh (an ahead-of-time compile for TPU runs under one)."""
    import jax

    return jax.default_backend() == "cpu" and jax.sharding.get_abstract_mesh().empty


# Most rows at which the kernels beat XLA's products (docs/benchmarks.md, 2 cores). bfloat16 only: XLA runs a
# one-row bfloat16 product over a float32 copy of the weights. In float32 the two measured the same.
ROWS_FASTER = {("bfloat16", False): 2, ("bfloat16", True): 2}


def matmul(x, w, transposed: bool = False):
    """x [M, K] . w [K, N] (or w [N, K] transposed: a tied embedding as the head) -> float32 [M, N].
    w float32 or bfloat16; x is converted to float32."""
    import jax
    import jax.numpy as jnp

    M = x.shape[0]
    N = w.shape[0] if transposed else w.shape[1]
    if M > MAX_ROWS:
        raise ValueError(f"the CPU kernels take at most {MAX_ROWS} rows, got {M}")
    target = _TARGETS[(transposed, jnp.dtype(w.dtype).name)]
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((M, N), jnp.float32), vmap_method="sequential")(
        x.astype(jnp.float32), w)


if __name__ == "__main__":
    print(f"built {build()}")
