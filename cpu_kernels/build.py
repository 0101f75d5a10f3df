"""Building and registering the CPU kernels (`SOURCES`) with XLA's FFI.

The sources are compiled on first use with the system C++ compiler (`-O3 -march=native`) into one library in a
cache directory keyed by the sources, jaxlib, the flags and the CPU; `python -m cpu_kernels.build` builds it
ahead (tools/setup.sh does). They need an x86-64 CPU with AVX-512 BF16; elsewhere, or without a compiler,
`available()` warns once and the backend is not picked by "auto" (asked for by name, it fails).
QRR_KERNEL_CACHE moves the build cache.
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

HERE = Path(__file__).parent / "src"
SOURCES = [HERE / "products.cc", HERE / "attention.cc", HERE / "embedding.cc", HERE / "layer.cc"]
HEADERS = [HERE / "threads.h", HERE / "tiles.h", HERE / "amx.h", HERE / "attend.h"]
FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w"]
TARGETS = ["QrrPackedF32", "QrrPackedBf16", "QrrPackF32", "QrrPackBf16", "QrrDecodeAttentionF32",
           "QrrDecodeAttentionBf16", "QrrTakeRows", "QrrDecodeLayerF32", "QrrDecodeLayerBf16",
           "QrrDecodeLayerPagedF32", "QrrDecodeLayerPagedBf16"]


def require() -> None:
    """Raises RuntimeError unless the kernels are built and registered (a caller about to emit one)."""
    if not available():
        raise RuntimeError("the CPU kernels could not be built (see the warning above)")


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return platform.machine() + flags


# The /proc/cpuinfo flags the kernels need (AVX-512 F and BF16: the instructions they are written in), and those of
# the AMX tiles that run many-row bfloat16 products where the CPU has them (src/amx.h).
KERNEL_FLAGS = frozenset({"avx512f", "avx512_bf16"})
AMX_FLAGS = frozenset({"amx_tile", "amx_bf16"})


def supported_cpu() -> bool:
    """x86-64 with KERNEL_FLAGS."""
    flags = set(_cpu_signature().split())
    return platform.machine() in ("x86_64", "AMD64") and KERNEL_FLAGS <= flags


def library_path() -> Path:
    """Where the built library for these sources, jaxlib and CPU lives (built or not)."""
    import jaxlib

    text = b"".join(f.read_bytes() for f in SOURCES + HEADERS)
    key = hashlib.sha256(text + jaxlib.__version__.encode() + " ".join(FLAGS).encode()
                         + _cpu_signature().encode()).hexdigest()[:16]
    root = Path(os.environ.get("QRR_KERNEL_CACHE")
                or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qwen-rl-research" / "kernels")
    return root / f"cpu_kernels-{key}.so"


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
        cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", f"-I{HERE}", *map(str, SOURCES), "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            names = ", ".join(f.name for f in SOURCES)
            raise RuntimeError(f"building {names} failed:\n{' '.join(cmd)}\n{result.stderr[-4000:]}")
        os.replace(out, path)  # atomic: a concurrent build leaves one complete library
    return path


@functools.cache
def available() -> bool:
    """The kernels are built and registered with XLA (once per process; callers also ask `enabled`). Warns
    once when they cannot be built; every caller then keeps XLA's ops."""
    import jax
    import jax.ffi

    try:
        library = ctypes.cdll.LoadLibrary(str(build()))
    except (RuntimeError, OSError) as e:
        warnings.warn(f"CPU decode kernels unavailable, using XLA's ops: {e}", RuntimeWarning, stacklevel=2)
        return False
    global _REGISTERED, _LIBRARY
    _LIBRARY = library
    if not _REGISTERED:  # once per process, even if `available` is asked again after a cache_clear
        for name in TARGETS:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
        _REGISTERED = True
    return True


_REGISTERED = False
_LIBRARY = None


def amx() -> bool:
    """Whether the kernels run bfloat16 products of many rows on AMX tiles here (src/amx.h): built
    for a CPU with AMX-BF16, the Linux kernel lends the tile registers, and QRR_CPU_AMX is not 0 (read once per
    process, by the first kernel that asks)."""
    return available() and bool(_LIBRARY.QrrAmxPermitted())


def cpu_has_amx() -> bool:
    """The CPU says it has AMX tiles with bfloat16 products (AMX_FLAGS in /proc/cpuinfo)."""
    return AMX_FLAGS <= set(_cpu_signature().split())


if __name__ == "__main__":
    print(f"built {build()}")
