"""Our CPU decode kernels (common/kernels/cpu_products): products against numpy in float64, the routing
rules, the decoder with them against the decoder without them, and the fallback when they cannot be built."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.config import get_preset
from common.kernels import cpu_products
from common.model import Decoder, KVCache

pytestmark = pytest.mark.skipif(not cpu_products.available(), reason="no C++ compiler: the kernels are off")


def _reference(x, w, transposed):
    w64 = np.asarray(jnp.asarray(w, jnp.float32), np.float64)
    return np.asarray(x, np.float64) @ (w64.T if transposed else w64)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_products_match_numpy(dtype, transposed, rows):
    rng = np.random.default_rng(rows)
    K, N = 200, 333  # neither a multiple of the kernels' blocks
    x = rng.standard_normal((rows, K)).astype(np.float32)
    w = jnp.asarray(rng.standard_normal((N, K) if transposed else (K, N)), dtype)
    got = np.asarray(jax.jit(cpu_products.matmul, static_argnums=2)(jnp.asarray(x), w, transposed))
    ref = _reference(x, w, transposed)
    assert got.dtype == np.float32 and got.shape == (rows, N)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_large_products_split_over_threads_match_numpy():
    """Large enough that every intra-op thread takes a block of rows (and the head a block of its rows)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 1536)), jnp.float32)
    for transposed, shape in ((False, (1536, 3072)), (True, (49152 // 4, 1536))):
        w = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
        got = np.asarray(jax.jit(cpu_products.matmul, static_argnums=2)(x, w, transposed))
        ref = _reference(x, w, transposed)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_too_many_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="at most 16 rows, got 17"):
        cpu_products.matmul(jnp.ones((17, 8)), jnp.ones((8, 4)))


def test_routing_rules(monkeypatch):
    assert cpu_products.routed(1, jnp.bfloat16)
    assert cpu_products.routed(2, jnp.bfloat16, transposed=True)
    assert not cpu_products.routed(3, jnp.bfloat16)  # XLA measured as fast from here on
    assert not cpu_products.routed(1, jnp.float32)  # XLA measured as fast in float32
    mesh = jax.make_mesh((1,), ("tensor",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):  # a sharded product stays XLA's
        assert not cpu_products.routed(1, jnp.bfloat16)
    monkeypatch.setenv("QRR_CPU_KERNELS", "0")
    assert not cpu_products.routed(1, jnp.bfloat16)


def _custom_calls(fn, *args):
    return jax.jit(lambda *a: fn(*a)).lower(*args).as_text().count("QrrXw")  # a fresh trace each time


def test_bfloat16_decode_step_runs_on_the_kernels_and_agrees_with_xla(monkeypatch):
    """A bfloat16 decode step of one row: every weight product (4 per layer, and the tied head) is our
    kernel, and the logits agree with XLA's products to bfloat16 rounding."""
    model = Decoder(get_preset("tiny"), dtype="bfloat16", param_dtype="bfloat16", rngs=nnx.Rngs(1))
    cfg = model.config
    prompt = jnp.asarray([[5, 9, 2, 7, 1]], jnp.int32)

    def prefill_then_step(tokens):
        cache = KVCache.zeros(cfg, 1, 8, model.dtype, start=jnp.zeros((1,), jnp.int32))
        _, cache = model.forward(tokens, cache=cache)
        logits, _ = model.forward(tokens[:, -1:], cache=cache)
        return logits

    assert _custom_calls(prefill_then_step, prompt) == 4 * cfg.num_layers + 1
    ours = np.asarray(jax.jit(lambda t: prefill_then_step(t))(prompt))
    monkeypatch.setenv("QRR_CPU_KERNELS", "0")
    assert _custom_calls(prefill_then_step, prompt) == 0
    xla = np.asarray(jax.jit(lambda t: prefill_then_step(t))(prompt))
    assert np.abs(ours - xla).max() <= 2e-2 * np.abs(xla).max()


def test_build_failure_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("QRR_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.raises(RuntimeError, match="building cpu_products.cc failed"):
        cpu_products.build()
    cpu_products.available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="CPU decode kernels unavailable"):
            assert not cpu_products.available()
        assert not cpu_products.routed(1, jnp.bfloat16)
    finally:
        cpu_products.available.cache_clear()
    monkeypatch.undo()
    assert cpu_products.available()
