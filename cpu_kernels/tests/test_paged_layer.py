"""The one-call decoder layer over the rollout engine's page pool (cpu_kernels/layer.decode_layer_paged, the cpu
backend's `paged_forward`): hidden states and pools against the decoder's own paged pass (`Decoder.forward_paged`
on the XLA reference) over ragged rows, page boundaries, prefix pages two rows share, padding rows, grouped
queries, both dtypes; the engine's samples on it equal the XLA engine's; when it runs; clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.config import ModelConfig
from common.engine import Engine
from common.model import Decoder
from common.paged_kv import NULL_PAGE, PagedKV, PageView
from cpu_kernels import build, forward, layer
from cpu_kernels.backend import CpuKernels

pytestmark = pytest.mark.skipif(not build.available(), reason="no C++ compiler or CPU support: kernels off")

PAGE = 4
LENGTHS = [1, 4, 5, 11, 0, 9]  # after this step: one token, a full page, a page boundary crossed, longer, padding,
# and a row whose first two pages are row 3's (a shared prefix)


def _decoder(dtype: str, kv_heads: int = 2, bias: bool = True, attention="xla") -> Decoder:
    cfg = ModelConfig(vocab_size=300, hidden_size=64, intermediate_size=99, num_layers=2, num_heads=4,
                      num_kv_heads=kv_heads, head_dim=16, rope_theta=10000.0, attention_bias=bias,
                      tie_embeddings=bias)
    model = Decoder(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(3), attention=attention)
    rng = np.random.default_rng(4)
    for param in (model.layers.attn_norm, model.layers.mlp_norm):  # not all ones: a missing scale would show
        param[...] = jnp.asarray(1.0 + 0.3 * rng.standard_normal(param.shape), dtype)
    return model


def _pool_and_view(model: Decoder, rng, T: int = 1):
    """A pool of random keys and values (every page, so a read of the wrong page shows) and the view of a call of
    T tokens a row, the last T of each row (fewer real ones in a shorter row): row 5 lists row 3's first two
    pages, then pages of its own; row 4 is padding."""
    cfg = model.config
    N = 24
    shape = (cfg.num_kv_heads, cfg.num_layers, N, PAGE, cfg.head_dim)
    kv = PagedKV(k=jnp.asarray(rng.standard_normal(shape), model.dtype),
                 v=jnp.asarray(rng.standard_normal(shape), model.dtype))
    P = 4
    table = np.full((len(LENGTHS), P), NULL_PAGE, np.int32)
    free = list(rng.permutation(np.arange(1, N)))
    for b, n in enumerate(LENGTHS):
        for j in range(-(-n // PAGE)):
            table[b, j] = table[3, j] if b == 5 and j < 2 else free.pop()
    lengths = np.asarray(LENGTHS, np.int32)
    positions = np.maximum(lengths - T, 0)[:, None] + np.arange(T)
    return kv, PageView(page_table=jnp.asarray(table), positions=jnp.asarray(positions, jnp.int32),
                        lengths=jnp.asarray(lengths))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("T, kv_heads, bias", [(1, 2, True), (1, 1, False), (1, 4, True), (3, 2, True)])
def test_the_backends_paged_pass_equals_the_decoders(dtype, T, kv_heads, bias):
    """T = 1: a decode step, each layer one kernel call; T = 3: a prefill chunk, the packed products op by op."""
    model = _decoder(dtype, kv_heads, bias)
    rng = np.random.default_rng(5)
    kv, view = _pool_and_view(model, rng, T)
    tokens = jnp.asarray(rng.integers(1, 300, (len(LENGTHS), T)), jnp.int32)
    packed = forward.pack_weights(model)
    ours_h, ours_kv = jax.jit(lambda kv: CpuKernels().paged_forward(model, packed, tokens, kv, view))(kv)
    ref_h, ref_kv = jax.jit(lambda kv: model.forward_paged(tokens, kv, view))(kv)
    real = np.asarray(view.valid())  # the padding row's and padding tokens' hidden states are anything
    tol = 1e-5 if dtype == "float32" else 3e-2
    f32 = lambda a: np.asarray(a, np.float32)
    ours, ref = f32(ours_h)[real], f32(ref_h)[real]
    assert np.abs(ours - ref).max() <= tol * np.abs(ref).max()
    # every page but the null page (which the reference's padding writes) holds the same keys and values
    for a, b in ((ours_kv.k, ref_kv.k), (ours_kv.v, ref_kv.v)):
        a, b = f32(a)[:, :, 1:], f32(b)[:, :, 1:]
        assert np.abs(a - b).max() <= tol * np.abs(b).max()


def test_the_engine_samples_the_same_tokens_on_the_kernel_as_on_xla():
    rng = np.random.default_rng(6)
    prompts = [list(rng.integers(1, 300, n)) for n in (3, 17, 40, 5, 33)] + [[7, 8, 9, 10, 11, 12, 13, 14, 15]] * 3
    runs = {}
    for attention in ("cpu", "xla"):
        model = _decoder("float32", attention=attention)
        engine = Engine(model, max_slots=4, page_size=8, num_pages=40)
        runs[attention] = engine.generate(nnx.state(model), prompts, max_new_tokens=24, temperature=1.0, seed=2)
    assert runs["cpu"].token_ids == runs["xla"].token_ids
    np.testing.assert_allclose(sum(runs["cpu"].logprobs, []), sum(runs["xla"].logprobs, []), atol=1e-4)


def test_when_the_backend_runs_the_paged_kernel():
    """A decode step of float32 or bfloat16 rows over pages of a power-of-two size on packed weights: one kernel call a
    layer; a prefill chunk or pages of another size: the packed products op by op; no packed weights or
    layer_kernel=False: the decoder's own pass."""
    model = _decoder("float32")
    cfg = model.config
    backend = CpuKernels()
    packed = forward.pack_weights(model)

    def calls(tokens, page=PAGE, prepared=packed, backend=backend, name="QrrDecodeLayerPaged"):
        kv = PagedKV.zeros(cfg, 8, page, jnp.float32)
        view = PageView(page_table=jnp.ones((2, 2), jnp.int32), positions=jnp.zeros(tokens.shape, jnp.int32),
                        lengths=jnp.ones((2,), jnp.int32))
        run = lambda t: backend.paged_forward(model, prepared, t, kv, view)[0]
        return jax.jit(run).lower(tokens).as_text().count(name)

    one, chunk = jnp.ones((2, 1), jnp.int32), jnp.ones((2, 3), jnp.int32)
    assert calls(one) == cfg.num_layers
    assert calls(one, name="QrrPacked") == 0  # (the head's product is the caller's)
    op_by_op = 4 * cfg.num_layers
    assert calls(chunk) == 0 and calls(chunk, name="QrrPacked") == op_by_op
    assert calls(one, page=3) == 0 and calls(one, page=3, name="QrrPacked") == op_by_op
    for other in (dict(prepared=None), dict(backend=CpuKernels(layer_kernel=False))):
        assert calls(one, **other) == 0 and calls(one, name="QrrPacked", **other) == 0


def test_bad_shapes_and_pages_are_clear_errors():
    model = _decoder("float32")
    cfg = model.config
    packed = forward.pack_weights(model)["layers"][0]
    block = model.block(0)
    x = jnp.zeros((2, cfg.hidden_size), jnp.float32)
    cos = jnp.ones((2, cfg.head_dim), jnp.float32)
    args = lambda kv, table, lengths: (x, block.attn_norm[...], block.attn.qkv_bias[...], block.mlp_norm[...], packed,
                                       cos, cos, kv.k, kv.v, 0, table, lengths)
    kv = PagedKV.zeros(cfg, 8, PAGE, jnp.float32)
    with pytest.raises(ValueError, match="power-of-two"):
        layer.decode_layer_paged(*args(PagedKV.zeros(cfg, 8, 3, jnp.float32), jnp.ones((2, 2), jnp.int32),
                                       jnp.ones((2,), jnp.int32)), eps=1e-6, intermediate=cfg.intermediate_size)
    with pytest.raises(ValueError, match="shapes disagree"):
        layer.decode_layer_paged(*args(kv, jnp.ones((3, 2), jnp.int32), jnp.ones((2,), jnp.int32)), eps=1e-6,
                                 intermediate=cfg.intermediate_size)
    run = lambda table, lengths: jax.block_until_ready(layer.decode_layer_paged(
        *args(kv, table, lengths), eps=1e-6, intermediate=cfg.intermediate_size))
    with pytest.raises(Exception, match="a page outside the pool"):
        run(jnp.full((2, 2), 8, jnp.int32), jnp.ones((2,), jnp.int32))
    with pytest.raises(Exception, match="longer than its page table"):
        run(jnp.ones((2, 2), jnp.int32), jnp.full((2,), 2 * PAGE + 1, jnp.int32))
