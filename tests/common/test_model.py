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
    # float32 agrees to 1-3e-6 relative; RMSNorm with a doubled epsilon is off by 5-9e-5
    assert rel_err(model(ids), hf_logits(hf, ids)) <= 1e-5


@pytest.mark.parametrize("case", ["qwen2-gqa2-tied-1e6", "llama-gqa7-untied-1e6"])
def test_logits_match_transformers_where_rmsnorm_epsilon_matters(case, tmp_path):
    """Embeddings of std 3e-3 give the first norms inputs of mean square ~1e-5, the size of the epsilon (1e-5,
    not the default): the epsilon read from config.json and where it is added both show in the logits."""
    hf = make_hf_model(case, tmp_path, embed_std=3e-3, rms_norm_eps=1e-5)
    model = load_hf_decoder(tmp_path)
    assert model.config.rms_norm_eps == 1e-5
    ids = np.random.RandomState(1).randint(0, model.config.vocab_size, (3, 17))
    ref = hf_logits(hf, ids)
    assert rel_err(model(ids), ref) <= 1e-5
    doubled = load_hf_decoder(tmp_path, config=model.config.replace(rms_norm_eps=2e-5))
    assert rel_err(doubled(ids), ref) > 1e-2  # so this case fails a decoder that gets epsilon wrong


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


def _dot_types(fn, *args):
    """(operand dtypes, output dtype) of every dot_general in fn's jaxpr, nested calls included."""
    import jax
    import jax.extend

    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append((tuple(str(v.aval.dtype) for v in eqn.invars), str(eqn.outvars[0].aval.dtype)))
        for sub in jax.extend.core.subjaxprs(jaxpr):
            walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_sampling_products_accumulate_in_float32_training_ones_stay_in_compute_dtype():
    """Under a KV cache (prefill and decode) a bfloat16 product returns float32 and is rounded once. Without a
    cache (training) products stay bfloat16, so their transposes do too."""
    import jax.numpy as jnp
    from flax import nnx

    from common.config import get_preset
    from common.kv_cache import KVCache
    from common.model import Decoder

    model = Decoder(get_preset("tiny"), dtype="bfloat16", param_dtype="bfloat16", rngs=nnx.Rngs(0))
    cfg = model.config
    for T in (1, 5):  # a decode step (fused products) and a prefill (one product per part)
        tokens = jnp.ones((2, T), jnp.int32)
        cache = KVCache.zeros(cfg, 2, 8, model.dtype, start=jnp.zeros((2,), jnp.int32))
        sampled = _dot_types(lambda t, c: model.forward(t, cache=c)[0], tokens, cache)
        # every product but the scores q.k (float32 already) and the head reads bfloat16 and returns float32
        assert sampled and all(out == "float32" for _, out in sampled), sampled
        assert sum(ins == ("bfloat16", "bfloat16") for ins, _ in sampled) >= 4 * cfg.num_layers, sampled
        trained = _dot_types(lambda t: model.forward(t)[0], tokens)
        layer_products = [out for ins, out in trained if ins == ("bfloat16", "bfloat16")]
        assert layer_products.count("bfloat16") >= 4 * cfg.num_layers, trained
