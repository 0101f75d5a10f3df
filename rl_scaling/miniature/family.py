"""The miniature's model family: tiny Qwen2-architecture decoders as rows of data.

Every size is one `ModelConfig` of `common.config` (q/k/v biases, RMSNorm, SwiGLU, RoPE, grouped-query
attention, tied embeddings), differing only in widths and depth; the vocabulary comes from the trained
tokenizer. N, the table's size, is the non-embedding parameter count (`rl_scaling.accounting`).
"""

from __future__ import annotations

import dataclasses

from common.config import ModelConfig
from rl_scaling.accounting import non_embedding_params

SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")


@dataclasses.dataclass(frozen=True)
class Shape:
    """Widths and depth of one size (hidden d, MLP width F, layers, heads H, kv heads K, head dim hd)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


def shape_from_dict(name: str, spec) -> Shape:
    """A Shape from a mapping with exactly SHAPE_KEYS; raises naming the size and the missing keys."""
    spec = dict(spec)
    missing = [k for k in SHAPE_KEYS if k not in spec]
    extra = sorted(set(spec) - set(SHAPE_KEYS))
    if missing or extra:
        raise KeyError(f"model size {name!r}: missing key(s) {missing}, unknown key(s) {extra}; "
                       f"a size needs {list(SHAPE_KEYS)}")
    return Shape(**{k: int(spec[k]) for k in SHAPE_KEYS})


def model_config(shape: Shape, vocab_size: int, eos_token_id: int, max_len: int = 256) -> ModelConfig:
    """The Qwen2 `ModelConfig` of a size, with the tokenizer's vocabulary and eos."""
    return ModelConfig(vocab_size=vocab_size, hidden_size=shape.hidden_size,
                       intermediate_size=shape.intermediate_size, num_layers=shape.num_layers,
                       num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads, head_dim=shape.head_dim,
                       rope_theta=10_000.0, rms_norm_eps=1e-6, attention_bias=True, tie_embeddings=True,
                       max_position_embeddings=max_len, model_type="qwen2", eos_token_id=eos_token_id)


def family_configs(sizes, vocab_size: int, eos_token_id: int) -> dict[str, ModelConfig]:
    """{size name: ModelConfig} for a mapping {name: shape dict}, in the mapping's order."""
    return {name: model_config(shape_from_dict(name, spec), vocab_size, eos_token_id)
            for name, spec in dict(sizes).items()}


def param_counts(configs: dict[str, ModelConfig]) -> dict[str, int]:
    """{size name: non-embedding parameter count N}."""
    return {name: non_embedding_params(cfg) for name, cfg in configs.items()}
