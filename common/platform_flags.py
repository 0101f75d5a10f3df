"""What an entry point sets before JAX starts on a GPU, and the compute dtype each platform gets by default:
the one place for both.

`apply_platform_defaults()` (called first thing by every command in tools/ that runs a model) adds
`GPU_XLA_FLAGS` to `XLA_FLAGS` and sets `XLA_PYTHON_CLIENT_MEM_FRACTION` when the platform is a GPU; on a CPU
or TPU it does nothing. It never overrides what the user set: a flag already in `XLA_FLAGS` keeps its value,
a memory fraction already in the environment stays. XLA reads both when the backend starts, so they are
decided without starting it (`platform()`).

The flags are the ones the GPU peers set for LLM training (MaxText's GPU scripts, NVIDIA JAX-Toolbox's
"GPU performance" page, JAX's "GPU performance tips"); each row says why. Left at XLA's default on purpose:
command buffers (CUDA graphs, `--xla_gpu_enable_command_buffer`): a decode step is many small kernels whose
launch cost CUDA graphs remove, which outweighs the memory they hold; MaxText switches them off for large
multi-GPU training, where a run can add `--xla_gpu_enable_command_buffer=` to `XLA_FLAGS` itself.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from typing import Mapping, MutableMapping

# (flag, value, why). Collective flags matter only on several GPUs (8xh100: fsdp all-gathers of each layer's
# parameters, reduce-scatters of its gradients); on one GPU they change nothing.
GPU_XLA_FLAGS: tuple[tuple[str, str, str], ...] = (
    ("xla_gpu_enable_latency_hiding_scheduler", "true",
     "schedule collectives early and compute under them (fsdp all-gathers overlap the previous layer's work)"),
    ("xla_gpu_enable_triton_gemm", "false",
     "cuBLAS for matrix products: faster than Triton's GEMMs for LLM shapes in bfloat16, and no autotuning "
     "at compile time (MaxText, JAX-Toolbox)"),
    ("xla_gpu_all_gather_combine_threshold_bytes", "134217728",
     "combine a layer's per-parameter all-gathers into NCCL calls of up to 128 MiB (fewer, larger transfers)"),
    ("xla_gpu_reduce_scatter_combine_threshold_bytes", "67108864",
     "the same for gradient reduce-scatters, up to 64 MiB (MaxText's value)"),
    ("xla_gpu_all_reduce_combine_threshold_bytes", "134217728",
     "the same for all-reduces (data-parallel gradients, metrics), up to 128 MiB"),
    ("xla_gpu_enable_pipelined_all_gather", "true",
     "in the scanned layers, fetch layer i+1's fsdp shards during layer i"),
    ("xla_gpu_enable_pipelined_reduce_scatter", "true",
     "in the scanned backward pass, reduce-scatter layer i's gradients during layer i-1"),
    ("xla_gpu_enable_pipelined_all_reduce", "true", "the same for all-reduces inside the layer scan"),
    ("xla_gpu_enable_while_loop_double_buffering", "true",
     "unroll the layer scan by two so that the pipelined collectives cross iterations without copies"),
)

MEM_FRACTION_ENV = "XLA_PYTHON_CLIENT_MEM_FRACTION"
# JAX's allocator takes 75% of a GPU's memory unless told; 0.9 is what MaxText and JAX-Toolbox run with
# (the rest: cuDNN / cuBLAS workspaces, NCCL buffers, the CUDA context). The GPU presets plan for this share
# (`common.mesh_presets`): it is what `memory_stats()['bytes_limit']` reports to the trainer.
GPU_MEM_FRACTION = 0.9

# Compute dtype by platform: bfloat16 on accelerators (their matrix units' native type), float32 on a CPU.
DEFAULT_DTYPE = {"gpu": "bfloat16", "tpu": "bfloat16", "cpu": "float32"}

_CUDA_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin", "jax_plugins.xla_cuda13", "jax_plugins.xla_cuda12")
_PLATFORM_NAMES = {"cuda": "gpu", "gpu": "gpu", "rocm": "gpu", "tpu": "tpu", "cpu": "cpu"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package
        return False


def _started_backend() -> str | None:
    """JAX's default backend when it has already started (then it is known for sure), else None."""
    if "jax" not in sys.modules:
        return None
    try:
        from jax._src import xla_bridge
        if not xla_bridge.backends_are_initialized():
            return None
    except (ImportError, AttributeError):
        return None
    import jax
    return jax.default_backend()


def platform(env: Mapping[str, str] | None = None) -> str:
    """"gpu", "tpu" or "cpu": what JAX's default backend is, or will be, judged without starting it (XLA's
    flags only count when given before). In order: the started backend; `JAX_PLATFORMS` (its first entry);
    an installed CUDA plugin with an NVIDIA device visible (and `CUDA_VISIBLE_DEVICES` not empty); libtpu
    with a TPU device file; else the CPU."""
    env = os.environ if env is None else env
    started = _started_backend() if env is os.environ else None
    if started:
        return started
    chosen = (env.get("JAX_PLATFORMS") or env.get("JAX_PLATFORM_NAME") or "").split(",")[0].strip().lower()
    if chosen:
        return _PLATFORM_NAMES.get(chosen, "cpu")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if (visible is None or visible.strip() not in ("", "-1")) and glob.glob("/dev/nvidia[0-9]*") \
            and any(_installed(m) for m in _CUDA_PLUGINS):
        return "gpu"
    if _installed("libtpu") and (glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")):
        return "tpu"
    return "cpu"


def default_compute_dtype(env: Mapping[str, str] | None = None) -> str:
    """The compute dtype a model gets unless its config says: "bfloat16" on GPU and TPU, "float32" on CPU."""
    return DEFAULT_DTYPE[platform(env)]


def merged_xla_flags(existing: str, defaults=GPU_XLA_FLAGS) -> str:
    """`existing` (an XLA_FLAGS value) with each default flag it does not name appended; a flag the user set,
    to any value, stays as the user set it."""
    named = {part.lstrip("-").split("=", 1)[0] for part in existing.split() if part.startswith("--")}
    added = [f"--{flag}={value}" for flag, value, _ in defaults if flag not in named]
    return " ".join([existing.strip(), *added]).strip()


def apply_platform_defaults(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """On a GPU: XLA_FLAGS gains `GPU_XLA_FLAGS` (those not already set) and XLA_PYTHON_CLIENT_MEM_FRACTION
    becomes `GPU_MEM_FRACTION` when unset. Elsewhere nothing. Returns the variables it changed (name -> new
    value). Call before anything starts a JAX backend: afterwards XLA has read its flags."""
    env = os.environ if env is None else env
    if platform(env) != "gpu":
        return {}
    changed = {}
    flags = merged_xla_flags(env.get("XLA_FLAGS", ""))
    if flags != env.get("XLA_FLAGS", ""):
        changed["XLA_FLAGS"] = flags
    if MEM_FRACTION_ENV not in env:
        changed[MEM_FRACTION_ENV] = str(GPU_MEM_FRACTION)
    env.update(changed)
    return changed
