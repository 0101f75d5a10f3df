"""The "cpu" backend behind common.attention's seam: registered and selected as the seam says, and the decoder's
sampling on it in parity with the "xla" reference (greedy tokens equal, log-probs to the dtype's rounding) over
ragged prompt lengths, batch padding, shared prefixes (the sampler's prefill groups) and grouped-query heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.attention import XlaAttention, available_backends, select_backend
from common.config import ModelConfig, get_preset
from common.kv_cache import KVCache
from common.model import Decoder
from common.sampler import Sampler
from cpu_kernels import build, forward, products
from cpu_kernels.backend import MAX_ROWS, CpuKernels

pytestmark = pytest.mark.skipif(not build.available(), reason="no C++ compiler or CPU support: kernels off")


class _Mesh:  # what the seam reads of a mesh
    def __init__(self, size):
        self.size = size


def test_registered_and_selected_where_it_runs():
    assert "cpu" in available_backends()
    assert select_backend("auto", platform="cpu") == CpuKernels()
    assert select_backend("auto", mesh=_Mesh(1), platform="cpu") == CpuKernels()
    assert isinstance(select_backend("auto", mesh=_Mesh(8), platform="cpu"), XlaAttention)  # sharded: the reference
    assert not isinstance(select_backend("auto", platform="gpu"), CpuKernels)  # another platform's own
    with pytest.raises(ValueError, match="runs on one CPU device, not under a mesh of 8"):
        select_backend("cpu", mesh=_Mesh(8))
    assert Decoder(get_preset("tiny"), attention="cpu").backend == CpuKernels()
    assert CpuKernels() != CpuKernels(layer_kernel=False) and hash(CpuKernels()) == hash(CpuKernels())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cached_steps_run_on_the_kernels_and_agree_with_the_reference(dtype):
    """On packed weights every weight product of a step of two tokens a row under a cache (4 per layer, and the
    tied head) is our kernel, and the logits agree with the reference to the dtype's rounding."""
    model = Decoder(get_preset("tiny"), dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(1), scan_layers=False)
    cfg = model.config
    prompt = jnp.asarray([[5, 9, 2, 7, 1], [3, 3, 8, 1, 4]], jnp.int32)

    def prefill_then_step(tokens, backend):
        cache = KVCache.zeros(cfg, 2, 8, model.dtype)
        _, cache = model.forward(tokens, cache=cache)
        prepared = forward.pack_weights(model) if isinstance(backend, CpuKernels) else None
        hidden, _ = backend.cached_forward(model, prepared, tokens[:, -2:], cache)
        return backend.logits(model, prepared, hidden)

    calls = lambda backend: jax.jit(lambda t: prefill_then_step(t, backend)).lower(prompt).as_text().count("QrrPacked")
    assert calls(CpuKernels()) == 4 * cfg.num_layers + 1 and calls(XlaAttention()) == 0
    ours = np.asarray(jax.jit(lambda t: prefill_then_step(t, CpuKernels()))(prompt))
    xla = np.asarray(jax.jit(lambda t: prefill_then_step(t, XlaAttention()))(prompt))
    tol = 1e-5 if dtype == "float32" else 2e-2
    assert np.abs(ours - xla).max() <= tol * np.abs(xla).max()


def test_the_sampler_prepares_once_per_parameter_version():
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(2), attention="cpu")
    sampler = Sampler(model)
    sampler.sample([[5, 9, 2]], max_new_tokens=3)
    packed = sampler._prepared_for(sampler.state, 1)
    assert packed is not None and sampler._prepared_for(sampler.state, 3) is packed  # kept while the params stay
    assert sampler._prepared_for(sampler.state, MAX_ROWS + 1) is None  # too many rows: the decoder's own pass
    sampler.update_params(model)  # the same arrays: still the same packed weights
    assert sampler._prepared_for(sampler.state, 1) is packed
    new = jax.tree.map(lambda a: a * 1, sampler.state)  # new arrays (a training step): packed again
    assert sampler._prepared_for(new, 1) is not packed


def test_without_room_for_a_packed_copy_it_warns_and_samples_on_the_decoders_own_pass(monkeypatch):
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(2), attention="cpu")
    monkeypatch.setattr(products, "available_memory", lambda: 1000)
    sampler = Sampler(model)
    with pytest.warns(RuntimeWarning, match="not enough free memory for a packed copy"):
        out = sampler.sample([[5, 9, 2]], max_new_tokens=4)
    assert len(out.token_ids[0]) == 4


# ragged lengths (1..13 tokens), a shared 24-token prefix for the last three (the sampler prefills it once),
# an odd count (batch padding)
PROMPTS = [[5, 9, 2, 7, 1], [3, 8], [4, 4, 4, 11, 12, 13, 1, 6, 6, 2, 9, 40, 41], [100]] + [
    [7] * 24 + tail for tail in ([1, 2, 3], [9], [4, 5, 6, 7, 8])]


def _gqa_config(vocab=300) -> ModelConfig:  # 8 query heads on 2 kv heads, head_dim 16, q/k/v biases
    return ModelConfig(vocab_size=vocab, hidden_size=64, intermediate_size=112, num_layers=2, num_heads=8,
                       num_kv_heads=2, head_dim=16, rope_theta=10000.0, attention_bias=True, tie_embeddings=True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("config", ["tiny", "gqa"])
def test_sampling_on_the_cpu_backend_matches_the_reference(dtype, config):
    cfg = get_preset("tiny") if config == "tiny" else _gqa_config()
    outs = {}
    for attention in ("xla", "cpu"):
        model = Decoder(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(4), attention=attention)
        sampler = Sampler(model, max_cache_length=96)
        outs[attention] = [sampler.sample(PROMPTS, max_new_tokens=12, stop_token_ids=[]),
                           sampler.sample(PROMPTS, max_new_tokens=12, temperature=1.0, seed=3, stop_token_ids=[])]
    for xla, cpu in zip(outs["xla"], outs["cpu"]):
        if dtype == "float32":  # bfloat16 roundings may flip a near tie: compare its log-probs only
            assert cpu.token_ids == xla.token_ids
        lp_xla, lp_cpu = np.concatenate(xla.logprobs), np.concatenate(cpu.logprobs)
        assert np.isfinite(lp_cpu).all()
        if cpu.token_ids == xla.token_ids:
            np.testing.assert_allclose(lp_cpu, lp_xla, atol=1e-4 if dtype == "float32" else 5e-2)
    assert outs["xla"][0].token_ids == outs["cpu"][0].token_ids or dtype == "bfloat16"


def test_generate_takes_the_parameters_it_is_given():
    """The Rollout protocol on the cpu backend: parameters per call, packed for each new version."""
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(5), attention="cpu")
    sampler = Sampler(model)
    state = nnx.state(model)
    other = jax.tree.map(lambda a: a * 1.5, state)
    first = sampler.generate(state, PROMPTS[:2], max_new_tokens=6)
    second = sampler.generate(other, PROMPTS[:2], max_new_tokens=6)
    again = sampler.generate(state, PROMPTS[:2], max_new_tokens=6)
    assert first.token_ids == again.token_ids and first.token_ids != second.token_ids
    reference = Sampler(Decoder(get_preset("tiny"), rngs=nnx.Rngs(5))).generate(other, PROMPTS[:2], max_new_tokens=6)
    assert second.token_ids == reference.token_ids


def test_real_smollm2_generations_match_the_reference(smollm2_dir):
    """SmolLM2-135M-Instruct's real weights, float32: greedy generations of chat prompts equal the reference's."""
    from common import generate, load_pretrained

    prompts = ["The capital of France is", "def fibonacci(n):", "7 + 5 ="]
    outs = {}
    for attention in ("xla", "cpu"):
        model, tokenizer = load_pretrained(smollm2_dir, dtype="float32", attention=attention)
        assert model.backend.name == attention
        outs[attention] = generate(model, tokenizer, prompts, max_new_tokens=16)
    for x, c in zip(outs["xla"], outs["cpu"]):
        assert c.token_ids == x.token_ids
        np.testing.assert_allclose(c.logprobs, x.logprobs, atol=1e-4)
