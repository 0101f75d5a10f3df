"""The Hugging Face name -> our parameter path mapping, as data, with the per-tensor transforms.

HF stores linear weights as [out, in]; ours are [in, out] with attention heads split out:
q/k/v kernels [d, N, h], o kernel [H, h, d], biases [N, h]. Each transform has an exact inverse (export).
"""

from __future__ import annotations

import re

import numpy as np

from common.config import ModelConfig

# (our path, HF tensor name, transform). `{i}` = layer index.
PARAM_TABLE: tuple[tuple[str, str, str], ...] = (
    ("embedding", "model.embed_tokens.weight", "identity"),
    ("final_norm", "model.norm.weight", "identity"),
    ("lm_head", "lm_head.weight", "transpose"),
    ("layers.{i}.attn_norm", "model.layers.{i}.input_layernorm.weight", "identity"),
    ("layers.{i}.mlp_norm", "model.layers.{i}.post_attention_layernorm.weight", "identity"),
    ("layers.{i}.attn.q_kernel", "model.layers.{i}.self_attn.q_proj.weight", "in_heads"),
    ("layers.{i}.attn.k_kernel", "model.layers.{i}.self_attn.k_proj.weight", "in_heads"),
    ("layers.{i}.attn.v_kernel", "model.layers.{i}.self_attn.v_proj.weight", "in_heads"),
    ("layers.{i}.attn.o_kernel", "model.layers.{i}.self_attn.o_proj.weight", "out_heads"),
    ("layers.{i}.attn.q_bias", "model.layers.{i}.self_attn.q_proj.bias", "bias_heads"),
    ("layers.{i}.attn.k_bias", "model.layers.{i}.self_attn.k_proj.bias", "bias_heads"),
    ("layers.{i}.attn.v_bias", "model.layers.{i}.self_attn.v_proj.bias", "bias_heads"),
    ("layers.{i}.mlp.gate_kernel", "model.layers.{i}.mlp.gate_proj.weight", "transpose"),
    ("layers.{i}.mlp.up_kernel", "model.layers.{i}.mlp.up_proj.weight", "transpose"),
    ("layers.{i}.mlp.down_kernel", "model.layers.{i}.mlp.down_proj.weight", "transpose"),
)

# Tensors some HF checkpoints carry that hold no parameters of the model.
IGNORED_HF_TENSORS = (re.compile(r".*rotary_emb\.inv_freq$"),)


def to_ours(hf: np.ndarray, transform: str, our_shape: tuple[int, ...]) -> np.ndarray:
    """HF tensor (possibly a lazy memmap view) -> our layout. Stays a view where numpy allows."""
    if transform == "identity":
        return hf
    if transform == "transpose":
        return hf.T
    if transform == "in_heads":  # [N*h, d] -> [d, N, h]
        return hf.T.reshape(our_shape)
    if transform == "out_heads":  # [d, H*h] -> [H, h, d]
        return hf.T.reshape(our_shape)
    if transform == "bias_heads":  # [N*h] -> [N, h]
        return hf.reshape(our_shape)
    raise KeyError(f"unknown transform {transform!r}")


def to_hf(ours: np.ndarray, transform: str) -> np.ndarray:
    """Our layout -> the HF tensor (inverse of `to_ours`)."""
    if transform == "identity":
        return ours
    if transform == "transpose":
        return ours.T
    if transform == "in_heads":  # [d, N, h] -> [N*h, d]
        return ours.reshape(ours.shape[0], -1).T
    if transform == "out_heads":  # [H, h, d] -> [d, H*h]
        return ours.reshape(-1, ours.shape[-1]).T
    if transform == "bias_heads":
        return ours.reshape(-1)
    raise KeyError(f"unknown transform {transform!r}")


def hf_shape(our_shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    if transform == "identity":
        return tuple(our_shape)
    if transform == "transpose":
        return tuple(reversed(our_shape))
    if transform == "in_heads":
        return (our_shape[1] * our_shape[2], our_shape[0])
    if transform == "out_heads":
        return (our_shape[2], our_shape[0] * our_shape[1])
    if transform == "bias_heads":
        return (our_shape[0] * our_shape[1],)
    raise KeyError(f"unknown transform {transform!r}")


def expected_entries(config: ModelConfig) -> list[tuple[str, str, str]]:
    """(our dotted path, HF name, transform) for every parameter this config has."""
    out = []
    for ours, hf, transform in PARAM_TABLE:
        if ours == "lm_head" and config.tie_embeddings:
            continue
        if "_bias" in ours and not config.attention_bias:
            continue
        if "{i}" in ours:
            out.extend((ours.format(i=i), hf.format(i=i), transform) for i in range(config.num_layers))
        else:
            out.append((ours, hf, transform))
    return out


def is_ignored(hf_name: str, config: ModelConfig) -> bool:
    if any(p.match(hf_name) for p in IGNORED_HF_TENSORS):
        return True
    # Tied checkpoints sometimes also store the (identical) lm_head.
    return hf_name == "lm_head.weight" and config.tie_embeddings
