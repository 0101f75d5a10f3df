"""The Hugging Face name -> our parameter path mapping, as data, with the per-tensor transforms.

HF stores linear weights as [out, in]; ours are [in, ...out] with attention heads split out: the fused
q/k/v kernel [d, K, G + 2, h] (per kv head: its G query heads, then its key, then its value), the o kernel
[H, h, d], the fused q/k/v bias [K, G + 2, h], the fused gate/up kernel [d, 2, F]. A fused parameter is
several HF tensors, each one *part* of it: a range of its second-to-last axis (`part_range`). Each
transform maps one HF tensor to its part and back exactly (export).
"""

from __future__ import annotations

import re

import numpy as np

from common.config import ModelConfig

# (our path, HF tensor name, transform, part of our parameter or None). `{i}` = layer index.
PARAM_TABLE: tuple[tuple[str, str, str, str | None], ...] = (
    ("embedding", "model.embed_tokens.weight", "identity", None),
    ("final_norm", "model.norm.weight", "identity", None),
    ("lm_head", "lm_head.weight", "transpose", None),
    ("layers.{i}.attn_norm", "model.layers.{i}.input_layernorm.weight", "identity", None),
    ("layers.{i}.mlp_norm", "model.layers.{i}.post_attention_layernorm.weight", "identity", None),
    ("layers.{i}.attn.qkv_kernel", "model.layers.{i}.self_attn.q_proj.weight", "transpose", "q"),
    ("layers.{i}.attn.qkv_kernel", "model.layers.{i}.self_attn.k_proj.weight", "transpose", "k"),
    ("layers.{i}.attn.qkv_kernel", "model.layers.{i}.self_attn.v_proj.weight", "transpose", "v"),
    ("layers.{i}.attn.o_kernel", "model.layers.{i}.self_attn.o_proj.weight", "out_heads", None),
    ("layers.{i}.attn.qkv_bias", "model.layers.{i}.self_attn.q_proj.bias", "bias", "q"),
    ("layers.{i}.attn.qkv_bias", "model.layers.{i}.self_attn.k_proj.bias", "bias", "k"),
    ("layers.{i}.attn.qkv_bias", "model.layers.{i}.self_attn.v_proj.bias", "bias", "v"),
    ("layers.{i}.mlp.gate_up_kernel", "model.layers.{i}.mlp.gate_proj.weight", "transpose", "gate"),
    ("layers.{i}.mlp.gate_up_kernel", "model.layers.{i}.mlp.up_proj.weight", "transpose", "up"),
    ("layers.{i}.mlp.down_kernel", "model.layers.{i}.mlp.down_proj.weight", "transpose", None),
)

# Tensors some HF checkpoints carry that hold no parameters of the model.
IGNORED_HF_TENSORS = (re.compile(r".*rotary_emb\.inv_freq$"),)

PART_AXIS = -2  # the axis along which a fused parameter's parts lie


def part_range(part: str | None, our_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """[start, stop) of `part` along PART_AXIS of a fused parameter of shape `our_shape`; None: the whole."""
    if part is None:
        return None
    n = our_shape[PART_AXIS]
    ranges = {"q": (0, n - 2), "k": (n - 2, n - 1), "v": (n - 1, n), "gate": (0, 1), "up": (1, 2)}
    if part not in ranges:
        raise KeyError(f"unknown part {part!r}")
    return ranges[part]


def part_shape(our_shape: tuple[int, ...], part: str | None) -> tuple[int, ...]:
    """Shape of `part` of a parameter of shape `our_shape` (the whole shape for part None)."""
    span = part_range(part, our_shape)
    if span is None:
        return tuple(our_shape)
    shape = list(our_shape)
    shape[PART_AXIS] = span[1] - span[0]
    return tuple(shape)


def take_part(ours: np.ndarray, part: str | None) -> np.ndarray:
    """The slice of our parameter that `part` is."""
    span = part_range(part, ours.shape)
    if span is None:
        return ours
    return ours[(..., slice(*span), slice(None))]


def to_ours(hf: np.ndarray, transform: str, our_shape: tuple[int, ...]) -> np.ndarray:
    """HF tensor (possibly a lazy memmap view) -> our layout of shape `our_shape` (a part's shape for a fused
    parameter). Stays a view where numpy allows."""
    if transform == "identity":
        return hf
    if transform == "transpose":  # [out, in] -> [in, *out split], e.g. q [H*h, d] -> [d, K, G, h]
        return hf.T.reshape(our_shape)
    if transform == "out_heads":  # [d, H*h] -> [H, h, d]
        return hf.T.reshape(our_shape)
    if transform == "bias":  # [N*h] -> e.g. [K, G, h]
        return hf.reshape(our_shape)
    raise KeyError(f"unknown transform {transform!r}")


def to_hf(ours: np.ndarray, transform: str) -> np.ndarray:
    """Our layout (a part, for a fused parameter) -> the HF tensor (inverse of `to_ours`)."""
    if transform == "identity":
        return ours
    if transform == "transpose":  # [in, *out] -> [out, in]
        return ours.reshape(ours.shape[0], -1).T
    if transform == "out_heads":  # [H, h, d] -> [d, H*h]
        return ours.reshape(-1, ours.shape[-1]).T
    if transform == "bias":
        return ours.reshape(-1)
    raise KeyError(f"unknown transform {transform!r}")


def hf_shape(our_shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    """Shape of the HF tensor whose our-layout shape (a part's, for a fused parameter) is `our_shape`."""
    size = int(np.prod(our_shape))
    if transform == "identity":
        return tuple(our_shape)
    if transform == "transpose":
        return (size // our_shape[0], our_shape[0])
    if transform == "out_heads":
        return (our_shape[-1], size // our_shape[-1])
    if transform == "bias":
        return (size,)
    raise KeyError(f"unknown transform {transform!r}")


def expected_entries(config: ModelConfig) -> list[tuple[str, str, str, str | None]]:
    """(our dotted path, HF name, transform, part) for every HF tensor this config has: the parameters outside
    the layers, then layer by layer, so the parts of a fused parameter come one after another."""
    rows = [row for row in PARAM_TABLE
            if not (row[0] == "lm_head" and config.tie_embeddings)
            and not ("_bias" in row[0] and not config.attention_bias)]
    out = [row for row in rows if "{i}" not in row[0]]
    for i in range(config.num_layers):
        out.extend((ours.format(i=i), hf.format(i=i), transform, part)
                   for ours, hf, transform, part in rows if "{i}" in ours)
    return out


def stacked_path(ours: str) -> tuple[str, int | None]:
    """Our dotted path of one layer's parameter -> (the stacked parameter's path, the layer index);
    (path, None) for a parameter outside the layers. The decoder stacks its layers' parameters on a
    leading axis: "layers.3.attn.o_kernel" is row 3 of "layers.attn.o_kernel"."""
    head, _, rest = ours.partition(".")
    index, _, tail = rest.partition(".")
    if head == "layers" and index.isdigit():
        return f"layers.{tail}", int(index)
    return ours, None


def is_ignored(hf_name: str, config: ModelConfig) -> bool:
    if any(p.match(hf_name) for p in IGNORED_HF_TENSORS):
        return True
    # Tied checkpoints sometimes also store the (identical) lm_head.
    return hf_name == "lm_head.weight" and config.tie_embeddings
