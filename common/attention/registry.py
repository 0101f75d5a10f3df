"""The attention backends by name, and the one place that picks one: `select_backend(config key, mesh)`.

Built in: "xla" (plain XLA: the dense reference for short lengths, blockwise above), "blockwise" (always
blockwise), "splash" (the TPU Pallas kernel) and "cudnn" (cuDNN's fused attention on GPU). Other backends are
plugins: installed distributions that register an `AttentionBackend` subclass under the entry-point group
`ENTRY_POINT_GROUP` (the CPU decode kernels: `pip install -e ./cpu_kernels` registers "cpu"). "auto" takes
the first backend whose `suits(platform, mesh)` says yes: the plugins in name order, then the built-in kernels
in `AUTO_ORDER`, else "xla". The choice is made once, where a model is built or loaded, from the config key
and the mesh passed in: never from environment variables or the ambient mesh at trace time.
"""

from __future__ import annotations

import functools
import warnings
from importlib import metadata

from common.attention.base import AttentionBackend
from common.attention.blockwise import BlockwiseAttention
from common.attention.cudnn import CudnnAttention
from common.attention.splash import SplashAttention
from common.attention.xla import XlaAttention

ENTRY_POINT_GROUP = "qwen_rl_research.attention"
BUILTIN: dict[str, type[AttentionBackend]] = {"xla": XlaAttention, "blockwise": BlockwiseAttention,
                                              "splash": SplashAttention, "cudnn": CudnnAttention}
AUTO_ORDER = ("splash", "cudnn")  # the built-in backends "auto" asks, after the plugins


def _plugins() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}


def available_backends() -> list[str]:
    """Names a config may give: "auto", the built-in ones and the installed plugins."""
    return ["auto", *BUILTIN, *sorted(_plugins())]


@functools.cache
def backend_class(name: str) -> type[AttentionBackend]:
    """The backend class registered as `name`. Raises ValueError naming the known backends."""
    if name in BUILTIN:
        return BUILTIN[name]
    plugins = _plugins()
    if name not in plugins:
        raise ValueError(f"unknown attention backend {name!r}; known here: {available_backends()} (a plugin "
                         f"registers under the entry-point group {ENTRY_POINT_GROUP!r}: is it installed?)")
    cls = plugins[name].load()
    if not (isinstance(cls, type) and issubclass(cls, AttentionBackend)):
        raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP!r} gives {cls!r}, not an AttentionBackend")
    return cls


def select_backend(name: str | AttentionBackend = "auto", *, mesh=None, platform: str | None = None
                   ) -> AttentionBackend:
    """The backend a model built or loaded now uses. name: "auto", a backend name (`available_backends`), or
    a backend (checked against the mesh). mesh: the mesh the model runs under (None: one device).
    platform: "cpu", "gpu" or "tpu" (default: the mesh's devices', so that a program compiled ahead of time for
    a TPU slice on a CPU host gets the TPU's backend; without a mesh JAX's default backend)."""
    import jax

    if isinstance(name, AttentionBackend):
        name.check_mesh(mesh)
        return name
    if name == "auto":  # (a named backend needs no platform)
        platform = platform or (mesh.devices.flat[0].platform if mesh is not None else jax.default_backend())
        for plugin in sorted(_plugins()):
            try:
                cls = backend_class(plugin)
            except Exception as e:  # a broken plugin must not stop a run that can use the reference
                warnings.warn(f"attention backend {plugin!r} could not be loaded ({e}); skipping it",
                              RuntimeWarning, stacklevel=2)
                continue
            if cls.suits(platform, mesh):
                return cls.for_mesh(mesh)
        for builtin in AUTO_ORDER:
            if BUILTIN[builtin].suits(platform, mesh):
                return BUILTIN[builtin].for_mesh(mesh)
        return XlaAttention()
    backend = backend_class(name).for_mesh(mesh)
    backend.check_mesh(mesh)
    return backend
