"""Our one-call decoder layer for a decode step (common/kernels/cpu_layer): the decoder's logits and caches with it
against XLA's path (common/model.py without packed weights), over configs that cover biases on and off, grouped
query ratios 1, 2 and 7, head sizes below and above one vector, an odd MLP width (padded in bfloat16), ragged
left-padded rows and several steps; the routing; clear errors for shapes that disagree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.config import ModelConfig
from common.kernels import cpu_build, cpu_layer, cpu_products
from common.model import Decoder, KVCache

pytestmark = pytest.mark.skipif(not cpu_build.available(), reason="no C++ compiler or CPU support: kernels off")


@pytest.fixture(autouse=True)
def every_dtype_routed(monkeypatch):
    """Every dtype the kernel is built for, whatever FASTER routes as shipped."""
    monkeypatch.setattr(cpu_layer, "FASTER", {"float32", "bfloat16"})

# name -> (hidden, intermediate, heads, kv heads, head_dim, q/k/v biases)
CASES = {
    "qwen-gqa2-bias": (64, 128, 4, 2, 16, True),
    "llama-mha-h32": (96, 96, 3, 3, 32, False),
    "gqa7-h8-odd-mlp": (56, 99, 7, 1, 8, True),
}


def _decoder(case: str, dtype: str) -> Decoder:
    hidden, inter, heads, kv, head_dim, bias = CASES[case]
    cfg = ModelConfig(vocab_size=300, hidden_size=hidden, intermediate_size=inter, num_layers=2, num_heads=heads,
                      num_kv_heads=kv, head_dim=head_dim, rope_theta=10000.0, attention_bias=bias,
                      tie_embeddings=bias)
    model = Decoder(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(3))
    rng = np.random.default_rng(4)
    for block in model.layers:  # non-trivial biases and norm scales: zeros and ones would hide a missing term
        for param, offset in ((block.attn_norm, 1.0), (block.mlp_norm, 1.0)) + (
                ((block.attn.qkv_bias, 0.0),) if bias else ()):
            param[...] = jnp.asarray(offset + 0.3 * rng.standard_normal(param.shape), dtype)
    return model


def _steps(model: Decoder, prompt, start, packed: bool, steps: int = 3):
    """Prefill the left-padded prompt, then `steps` decode steps (each feeding back the argmax of XLA's first
    step, so both paths see the same tokens): the logits of every step and the final caches."""
    B, T = prompt.shape
    cache = KVCache.zeros(model.config, B, T + steps, model.dtype, start=start)
    _, cache = model.forward(prompt, cache=cache)
    panels = model.decode_panels() if packed else None
    token, logits = prompt[:, -1:], []
    for _ in range(steps):
        out, cache = model.forward(token, cache=cache, panels=panels)
        logits.append(out[:, 0])
        token = (token * 7 + 3) % model.config.vocab_size  # fixed tokens, the same on both paths
    return jnp.stack(logits), cache.k, cache.v


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch", [3, 18])
def test_decode_steps_on_the_layer_kernel_agree_with_xla(case, dtype, batch):
    """18 rows: in bfloat16 on a CPU with AMX, products whose contracting size is a multiple of 32 run on the
    tiles (common/kernels/cpu_amx.h), in one block of 16 rows and one of 2."""
    model = _decoder(case, dtype)
    rng = np.random.default_rng(5)
    prompt = jnp.asarray(rng.integers(1, 300, (batch, 6)), jnp.int32)
    start = jnp.asarray(([0, 2, 5] * batch)[:batch], jnp.int32)  # ragged rows: 6, 4 and 1 real prompt tokens
    run = lambda packed: jax.jit(lambda p, s: _steps(model, p, s, packed))(prompt, start)
    text = jax.jit(lambda p, s: _steps(model, p, s, True)).lower(prompt, start).as_text()
    assert text.count("QrrDecodeLayer") == 3 * model.config.num_layers  # every layer of every step
    ours, xla = run(True), run(False)
    tol = 1e-5 if dtype == "float32" else 3e-2
    for name, a, b in zip(("logits", "k cache", "v cache"), ours, xla):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
            assert np.abs(x - y).max() <= tol * np.abs(y).max(), name


def test_decode_step_routing(monkeypatch):
    """A decode step with packed weights is one kernel call per layer plus the head's product; without packed
    weights, or with the kernels turned off, or for several tokens a row (prefill), XLA's path."""
    model = _decoder("qwen-gqa2-bias", "float32")
    cfg = model.config
    tokens = jnp.ones((2, 1), jnp.int32)

    def step(tokens, packed, length=1):
        cache = KVCache.zeros(cfg, 2, 8, model.dtype)
        return model.forward(jnp.tile(tokens, (1, length)), cache=cache,
                             panels=model.decode_panels() if packed else None)[0]

    def calls(fn, name):
        return jax.jit(fn).lower(tokens).as_text().count(name)

    assert calls(lambda t: step(t, True), "QrrDecodeLayer") == cfg.num_layers
    assert calls(lambda t: step(t, True), "QrrPacked") == 1  # the head
    assert calls(lambda t: step(t, False), "QrrDecodeLayer") == 0
    assert calls(lambda t: step(t, True, length=3), "QrrDecodeLayer") == 0  # a prefill: per-product kernels
    assert not cpu_layer.routed("float32", "bfloat16", 64)  # a cache in another dtype
    monkeypatch.setattr(cpu_layer, "FASTER", {"bfloat16"})  # a dtype left out of FASTER stays op by op
    assert cpu_layer.routed("bfloat16", "bfloat16", 64) and not cpu_layer.routed("float32", "float32", 64)
    assert not cpu_layer.routed("float32", "float32", cpu_layer.MAX_HEAD_DIM + 1)


@pytest.mark.parametrize("switch", ["QRR_CPU_KERNELS", "QRR_CPU_LAYER_KERNEL"])
def test_routing_follows_the_switches(monkeypatch, switch):
    assert cpu_layer.routed("float32", "float32", 64)
    monkeypatch.setenv(switch, "0")
    assert not cpu_layer.routed("float32", "float32", 64)


def test_switch_all_routes_every_dtype(monkeypatch):
    monkeypatch.setattr(cpu_layer, "FASTER", set())
    assert not cpu_layer.routed("float32", "float32", 64)
    monkeypatch.setenv("QRR_CPU_LAYER_KERNEL", "all")
    assert cpu_layer.routed("float32", "float32", 64) and cpu_layer.routed("bfloat16", "bfloat16", 64)


def test_shapes_that_disagree_are_clear_errors():
    model = _decoder("qwen-gqa2-bias", "float32")
    block, cfg = model.layers[0], model.config
    panels = model.decode_panels()["layers"][0]
    B, S, h = 2, 8, cfg.head_dim
    x = jnp.ones((B, cfg.hidden_size))
    k = jnp.zeros((B, cfg.num_kv_heads, h, S))
    v = jnp.zeros((B, cfg.num_kv_heads, S, h))
    args = dict(x=x, attn_norm=block.attn_norm[...], qkv_bias=block.attn.qkv_bias[...], mlp_norm=block.mlp_norm[...],
                panels=panels, cos=jnp.ones((B, h)), sin=jnp.zeros((B, h)), k_cache=k, v_cache=v, index=0,
                mask=jnp.ones((B, S), bool), eps=1e-6, intermediate=cfg.intermediate_size)
    with pytest.raises(ValueError, match=r"decode layer shapes disagree: .*v_cache \(2, 2, 9, 16\)"):
        cpu_layer.decode_layer(**{**args, "v_cache": jnp.zeros((B, cfg.num_kv_heads, S + 1, h))})
    with pytest.raises(ValueError, match="mask"):
        cpu_layer.decode_layer(**{**args, "mask": jnp.ones((B, S - 1), bool)})
    bf16_panels = {**panels, "o": cpu_products.pack(jnp.ones((cfg.num_heads * h, cfg.hidden_size), jnp.bfloat16))}
    with pytest.raises(ValueError, match="packed o weight is bfloat16"):
        cpu_layer.decode_layer(**{**args, "panels": bf16_panels})


def test_real_smollm2_bfloat16_steps_on_the_layer_kernel_agree_with_xla(smollm2_dir):
    """The shipped routing (bfloat16) on the real SmolLM2-135M-Instruct weights: three decode steps' logits and
    caches against XLA's path."""
    from common import load_pretrained

    model, _ = load_pretrained(smollm2_dir, dtype="bfloat16")
    prompt = jnp.asarray(np.random.default_rng(6).integers(100, 20000, (2, 9)), jnp.int32)
    start = jnp.asarray([0, 4], jnp.int32)
    graphdef, state = nnx.split(model)  # weights as arguments: as constants they would be folded at compile time
    run = jax.jit(lambda state, p, s, packed: _steps(nnx.merge(graphdef, state), p, s, packed), static_argnums=3)
    assert run.lower(state, prompt, start, True).as_text().count("QrrDecodeLayer") == 3 * model.config.num_layers
    ours, xla = (run(state, prompt, start, packed) for packed in (True, False))
    for name, a, b in zip(("logits", "k cache", "v cache"), ours, xla):
        x = np.concatenate([np.asarray(t, np.float32).ravel() for t in jax.tree.leaves(a)])
        y = np.concatenate([np.asarray(t, np.float32).ravel() for t in jax.tree.leaves(b)])
        assert np.abs(x - y).max() <= 3e-2 * np.abs(y).max(), name
