"""Random tiny transformers models (PyTorch, CPU, float32) saved as HF directories: the reference the
decoder is checked against."""

from __future__ import annotations

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

# name -> (architecture, heads, kv heads, tied, rope theta). Covers biases on/off, tied/untied,
# grouped-query ratios 1, 2 and 7, RoPE theta 1e4 and 1e6.
TINY_CASES = {
    "qwen2-mha-untied-1e4": ("qwen2", 4, 4, False, 1e4),
    "qwen2-gqa2-tied-1e6": ("qwen2", 4, 2, True, 1e6),
    "qwen2-gqa7-untied-1e6": ("qwen2", 7, 1, False, 1e6),
    "llama-gqa2-tied-1e4": ("llama", 4, 2, True, 1e4),
    "llama-gqa7-untied-1e6": ("llama", 7, 1, False, 1e6),
}


def make_hf_model(case: str, directory, *, vocab=256, hidden_per_head=16, layers=2, seed=0,
                  weight_std=0.15, embed_std=None, rms_norm_eps=1e-6):
    """embed_std: the embedding's standard deviation (default weight_std); a small one gives RMSNorm inputs
    whose mean square is close to rms_norm_eps, where the epsilon matters."""
    arch, heads, kv_heads, tied, theta = TINY_CASES[case]
    common = dict(vocab_size=vocab, hidden_size=heads * hidden_per_head, intermediate_size=3 * hidden_per_head * 2,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  head_dim=hidden_per_head, rope_theta=theta, tie_word_embeddings=tied,
                  max_position_embeddings=512, rms_norm_eps=rms_norm_eps)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, attention_bias=False))
    with torch.no_grad():  # non-trivial values everywhere, biases and norm scales included
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "embed_tokens" in name and embed_std is not None:
                p.normal_(0.0, embed_std)
            else:
                p.normal_(0.0, weight_std)
    model.eval()
    model.save_pretrained(directory)
    return model


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.float().numpy()


def hf_greedy(model, prompt: list[int], max_new_tokens: int, eos_token_id=None) -> list[int]:
    """transformers' generate, greedy, one unpadded prompt at a time."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


def rel_err(ours, ref) -> float:
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())
