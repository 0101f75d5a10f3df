"""The decoder against transformers (PyTorch, float32): logits and greedy generation."""

import numpy as np
import pytest

from common.checkpoint.hf_import import load_hf_decoder
from common.config import ModelConfig
from common.sampler import Sampler
from tests.common.hf_reference import TINY_CASES, hf_greedy, hf_logits, make_hf_model, rel_err


@pytest.mark.parametrize("case", sorted(TINY_CASES))
def test_logits_match_transformers_on_random_configs(case, tmp_path):
    hf = make_hf_model(case, tmp_path)
    model = load_hf_decoder(tmp_path)
    cfg = model.config
    assert cfg.attention_bias == case.startswith("qwen2")
    assert cfg.tie_embeddings == TINY_CASES[case][3]
    ids = np.random.RandomState(1).randint(0, cfg.vocab_size, (3, 17))
    assert rel_err(model(ids), hf_logits(hf, ids)) <= 1e-4


def test_biases_are_really_loaded(tmp_path):
    """Guard against a test that passes with zero biases: dropping them changes the logits."""
    hf = make_hf_model("qwen2-gqa2-tied-1e6", tmp_path)
    model = load_hf_decoder(tmp_path)
    ids = np.arange(12)[None]
    ref = hf_logits(hf, ids)
    model.layers[0].attn.qkv_bias[...] = 0 * model.layers[0].attn.qkv_bias[...]
    assert rel_err(model(ids), ref) > 1e-3


def test_greedy_generation_matches_transformers_random_qwen2(tmp_path):
    hf = make_hf_model("qwen2-gqa2-tied-1e6", tmp_path, weight_std=0.3)
    model = load_hf_decoder(tmp_path)
    rs = np.random.RandomState(0)
    prompts = [rs.randint(1, 256, n).tolist() for n in (3, 9, 17, 6)]
    out = Sampler(model, max_cache_length=128).sample(prompts, max_new_tokens=40)
    for prompt, ours in zip(prompts, out.token_ids):
        assert ours == hf_greedy(hf, prompt, 40)


def test_config_reads_rope_theta_from_rope_parameters():
    d = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
         "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}}
    assert ModelConfig.from_hf_dict(d).rope_theta == 100000.0
    assert ModelConfig.from_hf_dict({**d, "rope_theta": 5.0}).rope_theta == 5.0
