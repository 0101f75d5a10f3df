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
    model.layers.attn.qkv_bias[...] = model.layers.attn.qkv_bias[...].at[0].set(0)  # layer 0's
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
    from common.model import Decoder

    model = Decoder(get_preset("tiny"), dtype="bfloat16", param_dtype="bfloat16", rngs=nnx.Rngs(0))
    for T in (1, 5):  # a decode step (fused products) and a prefill (one product per part)
        tokens = jnp.ones((2, T), jnp.int32)
        cache = model.new_cache(2, 8, start=jnp.zeros((2,), jnp.int32))
        sampled = _dot_types(lambda t, c: model.forward(t, cache=c)[0], tokens, cache)
        # every product but the scores q.k (float32 already) and the head reads bfloat16 and returns float32
        assert sampled and all(out == "float32" for _, out in sampled), sampled
        assert sum(ins == ("bfloat16", "bfloat16") for ins, _ in sampled) >= 4, sampled  # one scanned layer
        trained = _dot_types(lambda t: model.forward(t)[0], tokens)
        layer_products = [out for ins, out in trained if ins == ("bfloat16", "bfloat16")]
        assert layer_products.count("bfloat16") >= 4, trained


def _stacked_and_unrolled(**kw):
    """The same random decoder twice: layers scanned, and unrolled."""
    from flax import nnx

    from common.config import get_preset
    from common.model import Decoder

    cfg = get_preset("tiny").replace(num_layers=3)
    return (Decoder(cfg, rngs=nnx.Rngs(7), scan_layers=True, **kw),
            Decoder(cfg, rngs=nnx.Rngs(7), scan_layers=False, **kw))


def test_layers_are_stacked_parameters_and_scan_as_unrolled():
    """One parameter per kind with a leading layers axis; the scanned pass equals the unrolled one in logits, in
    gradients under every remat policy, and under a KV cache (prefill then a decode step)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    scanned, unrolled = _stacked_and_unrolled()
    assert scanned.layers.attn.qkv_kernel.shape[0] == 3
    assert scanned.layers.attn.qkv_kernel.get_metadata()["logical_axes"][0] == "layers"
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, scanned.config.vocab_size, (2, 9)), jnp.int32)
    start = jnp.asarray([0, 3], jnp.int32)
    np.testing.assert_allclose(scanned.forward(tokens, start=start)[0], unrolled.forward(tokens, start=start)[0],
                               rtol=1e-5, atol=1e-5)

    def loss(model, remat):
        return jnp.mean(model.forward(tokens, start=start, remat=remat)[0] ** 2)

    reference = nnx.grad(loss)(unrolled, False)
    for remat in (False, "full", "dots", "dots_no_batch"):
        grads = jax.jit(nnx.grad(loss), static_argnums=1)(scanned, remat)
        for a, b in zip(jax.tree.leaves(nnx.state(grads)), jax.tree.leaves(nnx.state(reference))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=str(remat))

    outs = []
    for model in (scanned, unrolled):
        cache = model.new_cache(2, 12, start=start)
        assert cache.per_layer is (model is unrolled)
        first, cache = model.forward(tokens, cache=cache, prefill=True)
        step, cache = model.forward(tokens[:, :1], cache=cache)
        outs.append((first, step, jnp.stack(cache.k) if cache.per_layer else cache.k))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_remat_policy_names_and_cache_form_errors():
    import jax.numpy as jnp
    import pytest

    from common.kv_cache import KVCache
    from common.model import remat_policy

    assert remat_policy(False) is None and remat_policy("none") is None and remat_policy(True) is remat_policy("full")
    with pytest.raises(ValueError, match="unknown remat policy 'some'"):
        remat_policy("some")
    scanned, unrolled = _stacked_and_unrolled()
    tokens = jnp.ones((1, 2), jnp.int32)
    with pytest.raises(ValueError, match="scans its layers takes a stacked cache"):
        scanned.forward(tokens, cache=KVCache.zeros(scanned.config, 1, 4, jnp.float32))
    with pytest.raises(ValueError, match="unrolled layers takes a per-layer cache"):
        unrolled.forward(tokens, cache=KVCache.zeros(unrolled.config, 1, 4, jnp.float32, stacked=True))


def test_scanned_update_compiles_one_layer_whatever_the_depth():
    """The layer scan's point: the program of a 12-layer decoder's gradient is about as big as a 2-layer one's,
    also with scan_layers=False (which unrolls only the cached pass); an unrolled cached pass grows with depth."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from common.config import get_preset
    from common.model import Decoder

    def hlo_size(layers, scan):
        model = Decoder(get_preset("tiny").replace(num_layers=layers), rngs=nnx.Rngs(0), scan_layers=scan)
        graphdef, state = nnx.split(model)
        tokens = jnp.ones((2, 8), jnp.int32)
        grad = jax.grad(lambda s: jnp.mean(nnx.merge(graphdef, s).forward(tokens, remat=True)[0]))
        return len(jax.jit(grad).lower(state).as_text())

    assert hlo_size(12, True) < 1.3 * hlo_size(2, True)
    assert hlo_size(12, False) < 1.3 * hlo_size(2, False)

    def cached_size(layers, scan):
        model = Decoder(get_preset("tiny").replace(num_layers=layers), rngs=nnx.Rngs(0), scan_layers=scan)
        graphdef, state = nnx.split(model)
        step = lambda s, c: nnx.merge(graphdef, s).forward(jnp.ones((2, 1), jnp.int32), cache=c)[0]
        return len(jax.jit(step).lower(state, model.new_cache(2, 8)).as_text())

    assert cached_size(12, True) < 1.3 * cached_size(2, True)
    assert cached_size(12, False) > 3 * cached_size(2, False)
