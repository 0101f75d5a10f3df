"""The one-call decoder layer of a decode step (cpu_kernels/layer): the decoder's logits and caches with it against
the reference (common/model.py on the "xla" backend), over configs that cover biases on and off, grouped query
ratios 1, 2 and 7, head sizes below and above one vector, an odd MLP width (padded in bfloat16), ragged
left-padded rows and several steps; when the backend uses it; clear errors for shapes that disagree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.attention import XlaAttention
from common.config import ModelConfig
from common.kv_cache import KVCache
from common.model import Decoder
from cpu_kernels import build, forward, layer, products
from cpu_kernels.backend import CpuKernels

pytestmark = pytest.mark.skipif(not build.available(), reason="no C++ compiler or CPU support: kernels off")

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
    # unrolled layers, a cache per layer: what the cpu backend runs on (the reference computes the same either way)
    model = Decoder(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(3), scan_layers=False)
    rng = np.random.default_rng(4)
    stacked = model.layers  # every layer's parameters, stacked
    for param, offset in ((stacked.attn_norm, 1.0), (stacked.mlp_norm, 1.0)) + (
            ((stacked.attn.qkv_bias, 0.0),) if bias else ()):  # non-trivial: zeros and ones would hide a missing term
        param[...] = jnp.asarray(offset + 0.3 * rng.standard_normal(param.shape), dtype)
    return model


def _steps(model: Decoder, prompt, start, packed: bool, steps: int = 3, backend=None):
    """Prefill the left-padded prompt (the reference), then `steps` decode steps on the kernels (packed) or the
    reference, with fixed tokens, the same on both paths: the logits of every step and the final caches."""
    B, T = prompt.shape
    cache = KVCache.zeros(model.config, B, T + steps, model.dtype, start=start)
    _, cache = model.forward(prompt, cache=cache)
    backend = backend or (CpuKernels() if packed else XlaAttention())
    prepared = forward.pack_weights(model) if packed else None
    token, logits = prompt[:, -1:], []
    for _ in range(steps):
        hidden, cache = backend.cached_forward(model, prepared, token, cache)
        logits.append(backend.logits(model, prepared, hidden[:, 0]))
        token = (token * 7 + 3) % model.config.vocab_size
    return jnp.stack(logits), cache.k, cache.v


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch", [3, 18])
def test_decode_steps_on_the_layer_kernel_agree_with_xla(case, dtype, batch):
    """18 rows: in bfloat16 on a CPU with AMX, products whose contracting size is a multiple of 32 run on the
    tiles (src/amx.h), in one block of 16 rows and one of 2."""
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


def test_when_the_backend_uses_the_layer_kernel():
    """A decode step on packed weights is one kernel call per layer plus the head's product; a prefill, a cache in
    another dtype, or layer_kernel=False runs the kernels op by op; without packed weights, the decoder's own pass
    (the decode attention kernel only)."""
    model = _decoder("qwen-gqa2-bias", "float32")
    cfg = model.config
    tokens = jnp.ones((2, 1), jnp.int32)

    def step(tokens, packed=True, length=1, cache_dtype=jnp.float32, backend=CpuKernels()):
        cache = KVCache.zeros(cfg, 2, 8, cache_dtype)
        prepared = forward.pack_weights(model) if packed else None
        hidden, _ = backend.cached_forward(model, prepared, jnp.tile(tokens, (1, length)), cache)
        return backend.logits(model, prepared, hidden)

    def calls(fn, name):
        return jax.jit(fn).lower(tokens).as_text().count(name)

    assert calls(step, "QrrDecodeLayer") == cfg.num_layers
    assert calls(step, "QrrPacked") == 1  # the head
    op_by_op = 4 * cfg.num_layers + 1
    assert calls(lambda t: step(t, length=3), "QrrDecodeLayer") == 0  # a prefill
    assert calls(lambda t: step(t, length=3), "QrrPacked") == op_by_op
    assert calls(lambda t: step(t, cache_dtype=jnp.bfloat16), "QrrPacked") == op_by_op
    assert calls(lambda t: step(t, backend=CpuKernels(layer_kernel=False)), "QrrDecodeLayer") == 0
    assert calls(lambda t: step(t, backend=CpuKernels(layer_kernel=False)), "QrrPacked") == op_by_op
    assert calls(lambda t: step(t, packed=False), "QrrDecodeLayer") == 0
    assert calls(lambda t: step(t, packed=False), "QrrPacked") == 0


def test_layer_kernel_off_agrees_too():
    model = _decoder("gqa7-h8-odd-mlp", "float32")
    prompt = jnp.asarray(np.random.default_rng(7).integers(1, 300, (3, 6)), jnp.int32)
    start = jnp.asarray([0, 2, 5], jnp.int32)
    ours = _steps(model, prompt, start, True, backend=CpuKernels(layer_kernel=False))
    xla = _steps(model, prompt, start, False)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(xla)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * np.abs(np.asarray(b)).max())


def test_shapes_that_disagree_are_clear_errors():
    model = _decoder("qwen-gqa2-bias", "float32")
    block, cfg = model.block(0), model.config
    panels = forward.pack_weights(model)["layers"][0]
    B, S, h = 2, 8, cfg.head_dim
    x = jnp.ones((B, cfg.hidden_size))
    k = jnp.zeros((B, S, cfg.num_kv_heads, h))
    v = jnp.zeros((B, S, cfg.num_kv_heads, h))
    args = dict(x=x, attn_norm=block.attn_norm[...], qkv_bias=block.attn.qkv_bias[...], mlp_norm=block.mlp_norm[...],
                panels=panels, cos=jnp.ones((B, h)), sin=jnp.zeros((B, h)), k_cache=k, v_cache=v, index=0,
                mask=jnp.ones((B, S), bool), eps=1e-6, intermediate=cfg.intermediate_size)
    with pytest.raises(ValueError, match=r"decode layer shapes disagree: .*v_cache \(2, 9, 2, 16\)"):
        layer.decode_layer(**{**args, "v_cache": jnp.zeros((B, S + 1, cfg.num_kv_heads, h))})
    with pytest.raises(ValueError, match="mask"):
        layer.decode_layer(**{**args, "mask": jnp.ones((B, S - 1), bool)})
    bf16_panels = {**panels, "o": products.pack(jnp.ones((cfg.num_heads * h, cfg.hidden_size), jnp.bfloat16))}
    with pytest.raises(ValueError, match="packed o weight is bfloat16"):
        layer.decode_layer(**{**args, "panels": bf16_panels})


def test_real_smollm2_bfloat16_steps_on_the_layer_kernel_agree_with_xla(smollm2_dir):
    """The real SmolLM2-135M-Instruct weights in bfloat16: three decode steps' logits and caches against the
    reference."""
    from common import load_pretrained

    model, _ = load_pretrained(smollm2_dir, dtype="bfloat16", attention="xla")
    model.use_backend("xla", scan_layers=False)  # a cache per layer, as the cpu backend's pass takes
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
