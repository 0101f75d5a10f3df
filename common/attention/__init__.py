"""The attention / decode backend seam: what the decoder and the sampler call for attention.

    from common.attention import select_backend
    backend = select_backend("auto", mesh=mesh)   # a config key: "auto", a built-in name, or a plugin

`AttentionBackend` (base.py) is the protocol every backend implements. Built in: `XlaAttention` (xla.py:
`reference_attention`, the dense oracle every other backend is tested against, for short lengths, and
`blockwise_attention` (blockwise.py, online softmax, no [T, S] scores) above a size), `SplashAttention`
(splash.py: the Pallas splash kernel on TPU, in shard_map) and `CudnnAttention` (cudnn.py: cuDNN's fused
attention on GPU). `select_backend` (registry.py) names the backends and picks one. Plugins (the CPU decode
kernels of `cpu_kernels/`) register under the entry-point group `qwen_rl_research.attention`; nothing in
`common/` imports them.
"""

from common.attention.base import AttentionBackend, Visibility, attention_mask
from common.attention.blockwise import BlockwiseAttention, blockwise_attention
from common.attention.cudnn import CudnnAttention
from common.attention.registry import ENTRY_POINT_GROUP, available_backends, select_backend
from common.attention.splash import SplashAttention
from common.attention.xla import XlaAttention, reference_attention

__all__ = ["AttentionBackend", "Visibility", "attention_mask", "XlaAttention", "reference_attention",
           "BlockwiseAttention", "blockwise_attention", "SplashAttention", "CudnnAttention", "select_backend",
           "available_backends", "ENTRY_POINT_GROUP"]
