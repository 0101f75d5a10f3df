"""Model sizes as data: one `ModelConfig` per checkpoint family, read from and written to HF config.json.

Every Qwen2 / Qwen2.5 size and every Llama-architecture checkpoint (SmolLM2) is a row of numbers over one
decoder (`common.model.Decoder`); nothing here is code that differs by size.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

# HF `model_type` / `architectures` values this decoder runs exactly.
SUPPORTED_MODEL_TYPES = ("qwen2", "llama")
SUPPORTED_ARCHITECTURES = ("Qwen2ForCausalLM", "LlamaForCausalLM")


class UnknownArchitectureError(ValueError):
    """A config.json describes a model this decoder does not implement."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Qwen2-style decoder (Llama = Qwen2 without q/k/v biases)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    attention_bias: bool = True  # q/k/v biases: Qwen2 yes, Llama no
    tie_embeddings: bool = False
    max_position_embeddings: int = 32768
    model_type: str = "qwen2"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnknownArchitectureError(
                f"model_type {self.model_type!r} is not supported; known: {SUPPORTED_MODEL_TYPES}"
            )

    @property
    def q_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes) -> "ModelConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise KeyError(f"unknown ModelConfig field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    # ---- HF config.json ---------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Reads a transformers config dict (Qwen2Config or LlamaConfig, transformers 4 or 5)."""
        model_type = d.get("model_type")
        archs = d.get("architectures") or []
        if model_type not in SUPPORTED_MODEL_TYPES and not set(archs) & set(SUPPORTED_ARCHITECTURES):
            raise UnknownArchitectureError(
                f"unknown architecture: model_type={model_type!r}, architectures={archs}; "
                f"this decoder runs model_type in {SUPPORTED_MODEL_TYPES}"
            )
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in d]
        if missing:
            raise KeyError(f"config.json lacks required key(s) {missing}")
        num_heads = d["num_attention_heads"]
        head_dim = d.get("head_dim") or d["hidden_size"] // num_heads
        # transformers 5 moves rope_theta into rope_parameters; older files keep it at the top level.
        rope_theta = d.get("rope_theta")
        if rope_theta is None:
            rope_theta = (d.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        rope_scaling = d.get("rope_scaling") or {}
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
        if rope_type not in (None, "default"):
            raise UnknownArchitectureError(f"rope scaling {rope_type!r} is not implemented")
        if model_type == "llama":
            attention_bias = bool(d.get("attention_bias", False))
            if d.get("mlp_bias"):
                raise UnknownArchitectureError("Llama configs with mlp_bias=True are not implemented")
        else:
            attention_bias = True
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_layers=d["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=d.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            rope_theta=float(rope_theta),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            attention_bias=attention_bias,
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
            model_type=model_type or ("qwen2" if "Qwen2ForCausalLM" in archs else "llama"),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
        )

    @classmethod
    def from_hf_json(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"no config.json at {path}")
        return cls.from_hf_dict(json.loads(path.read_text()))

    def to_hf_dict(self) -> dict[str, Any]:
        """A config.json that transformers loads as Qwen2ForCausalLM / LlamaForCausalLM."""
        d = {
            "architectures": ["Qwen2ForCausalLM" if self.model_type == "qwen2" else "LlamaForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_dropout": 0.0,
            "use_cache": True,
        }
        if self.model_type == "llama":
            d.update(attention_bias=self.attention_bias, mlp_bias=False, pretraining_tp=1)
        else:
            d.update(use_sliding_window=False, sliding_window=None, max_window_layers=self.num_layers)
        if self.bos_token_id is not None:
            d["bos_token_id"] = self.bos_token_id
        if self.eos_token_id is not None:
            d["eos_token_id"] = self.eos_token_id
        return d

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        d = json.loads(text)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise KeyError(f"unknown ModelConfig key(s) {sorted(unknown)}")
        return cls(**d)


def _qwen2_5(layers, hidden, inter, heads, kv, head_dim, vocab, tied) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_layers=layers,
                       num_heads=heads, num_kv_heads=kv, head_dim=head_dim, rope_theta=1_000_000.0,
                       rms_norm_eps=1e-6, attention_bias=True, tie_embeddings=tied,
                       max_position_embeddings=32768, model_type="qwen2",
                       bos_token_id=151643, eos_token_id=151645)


# The hub's config.json values (see ../shared/OFFLINE.md).
PRESETS: dict[str, ModelConfig] = {
    "qwen2_5_0_5b": _qwen2_5(24, 896, 4864, 14, 2, 64, 151936, True),
    "qwen2_5_1_5b": _qwen2_5(28, 1536, 8960, 12, 2, 128, 151936, True),
    "qwen2_5_3b": _qwen2_5(36, 2048, 11008, 16, 2, 128, 151936, True),
    "qwen2_5_7b": _qwen2_5(28, 3584, 18944, 28, 4, 128, 152064, False),
    "qwen2_5_14b": _qwen2_5(48, 5120, 13824, 40, 8, 128, 152064, False),
    "qwen2_5_32b": _qwen2_5(64, 5120, 27648, 40, 8, 128, 152064, False),
    "qwen2_5_72b": _qwen2_5(80, 8192, 29568, 64, 8, 128, 152064, False),
    "smollm2_135m": ModelConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
        num_kv_heads=3, head_dim=64, rope_theta=100000.0, rms_norm_eps=1e-5, attention_bias=False,
        tie_embeddings=True, max_position_embeddings=8192, model_type="llama",
        bos_token_id=1, eos_token_id=2),
    # A few-MB random model for tests and the GRPO smoke config.
    "tiny": ModelConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=16, rope_theta=10000.0, attention_bias=True, tie_embeddings=True,
        max_position_embeddings=2048),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}") from None
