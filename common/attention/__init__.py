"""The attention / decode backend seam: what the decoder and the sampler call for attention.

    from common.attention import select_backend
    backend = select_backend("auto", mesh=mesh)   # a config key: "auto", "xla", or an installed plugin

`AttentionBackend` (base.py) is the protocol every backend implements; `XlaAttention` (xla.py) is the plain
JAX reference every other backend is tested against; `select_backend` (registry.py) names the backends and
picks one. Plugins (the CPU decode kernels of `cpu_kernels/`, and later TPU and GPU kernels) register under
the entry-point group `qwen_rl_research.attention`; nothing in `common/` imports them.
"""

from common.attention.base import AttentionBackend, Visibility, attention_mask
from common.attention.registry import ENTRY_POINT_GROUP, available_backends, select_backend
from common.attention.xla import XlaAttention

__all__ = ["AttentionBackend", "Visibility", "attention_mask", "XlaAttention", "select_backend",
           "available_backends", "ENTRY_POINT_GROUP"]
