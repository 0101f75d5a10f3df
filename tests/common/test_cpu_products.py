"""Our CPU decode products (common/kernels/cpu_products): the packed layout against numpy, products against
numpy in float64, the routing rules, the decoder and the sampler with them against XLA's products."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.config import get_preset
from common.kernels import cpu_build, cpu_products
from common.model import Decoder, KVCache
from common.sampler import Sampler

pytestmark = pytest.mark.skipif(not cpu_build.available(), reason="no C++ compiler or CPU support: kernels off")


def _reference(x, w, transposed):
    w64 = np.asarray(jnp.asarray(w, jnp.float32), np.float64)
    return np.asarray(jnp.asarray(x, jnp.float32), np.float64) @ (w64.T if transposed else w64)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("K", [7, 8])  # odd: element by element; even: whole panels as vectors, then the rest
def test_pack_layout(dtype, transposed, K):
    """Panels of 32 columns, zero-padded; bfloat16 with rows k, k+1 interleaved per column (K padded to even)."""
    N = 40
    w = np.asarray(jnp.asarray(np.arange(1, K * N + 1, dtype=np.float32).reshape(K, N), dtype), np.float32)
    got = np.asarray(jax.jit(cpu_products.pack, static_argnums=1)(
        jnp.asarray(w.T if transposed else w, dtype), transposed)).astype(np.float32)
    Kp = K + K % 2 if dtype == "bfloat16" else K
    padded = np.zeros((Kp, 64), np.float32)
    padded[:K, :N] = w
    if dtype == "float32":
        want = padded.reshape(K, 2, 32).transpose(1, 0, 2)
    else:
        want = padded.reshape(Kp // 2, 2, 2, 32).transpose(2, 0, 3, 1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("rows", [1, 3, 9, 33])
def test_products_match_numpy(dtype, transposed, rows):
    """Row counts below, at and past a tile of 8; neither K nor N a multiple of the panel (K odd for the
    bfloat16 row pairs)."""
    rng = np.random.default_rng(rows)
    K, N = 201, 333
    x = jnp.asarray(rng.standard_normal((rows, K)), dtype)
    w = jnp.asarray(rng.standard_normal((N, K) if transposed else (K, N)), dtype)
    got = np.asarray(jax.jit(cpu_products.matmul, static_argnums=2)(x, w, transposed))
    ref = _reference(x, w, transposed)
    assert got.dtype == np.float32 and got.shape == (rows, N)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_large_products_split_over_threads_match_numpy():
    """Large enough that every intra-op thread takes its own panels."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 1536)), jnp.bfloat16)
    for transposed, shape in ((False, (1536, 3072)), (True, (49152 // 4, 1536))):
        w = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
        got = np.asarray(jax.jit(cpu_products.matmul, static_argnums=2)(x, w, transposed))
        ref = _reference(x, w, transposed)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("panels", [1, 2, 3, 7, 64])
def test_every_panel_is_computed_once_however_the_threads_split_them(panels):
    """The threads stream their own ranges of panels and take panels from each other's ends when done
    (qrr::Team::ForRanges): fewer panels than threads, a few, many. New rows on every call, so that a panel left
    out would show the last call's (or no) values in its 32 columns rather than pass by chance."""
    rng = np.random.default_rng(panels)
    K, N = 96, 32 * panels - 5
    w = jnp.asarray(rng.standard_normal((K, N)), jnp.float32)
    packed = jax.jit(cpu_products.pack)(w)
    product = jax.jit(cpu_products.packed_matmul, static_argnums=2)
    for _ in range(20):
        x = jnp.asarray(rng.standard_normal((2, K)), jnp.float32)
        got = np.asarray(product(x, packed, N))
        ref = _reference(x, w, False)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("rows", [8, 16, 17, 40, 64, 592, 600])
@pytest.mark.parametrize("K", [64, 576])
def test_many_row_bfloat16_products_match_numpy(rows, K):
    """Contracting sizes that are multiples of 32: on a CPU with AMX these run on its tiles (cpu_amx.h), in blocks
    of 16 rows and one last block of 1-16; elsewhere on the vector tiles. A last panel of 13 columns. Full blocks
    go in pairs (40, 592 rows: the last block alone; 64, 600: an odd full block rides with it), in groups of pairs
    (at K = 576, 592 and 600 rows take three groups)."""
    rng = np.random.default_rng(rows + K)
    N = 32 * 5 + 13
    x = jnp.asarray(rng.standard_normal((rows, K)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((K, N)), jnp.bfloat16)
    got = np.asarray(jax.jit(cpu_products.matmul)(x, w))
    ref = _reference(x, w, False)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.skipif(not cpu_build.cpu_has_amx(), reason="the CPU has no AMX tiles")
def test_amx_tiles_are_used_where_the_cpu_has_them(monkeypatch):
    """A CPU with AMX-BF16 runs the many-row bfloat16 products on its tiles unless QRR_CPU_AMX=0 (a build without
    the tile intrinsics, or a refused arch_prctl, would silently fall back to the vector tiles)."""
    import os
    import subprocess
    import sys

    ask = [sys.executable, "-c", "from common.kernels import cpu_build; print(cpu_build.amx())"]
    env = {k: v for k, v in os.environ.items() if k != "QRR_CPU_AMX"}
    assert subprocess.run(ask, capture_output=True, text=True, env=env).stdout.strip() == "True"
    off = subprocess.run(ask, capture_output=True, text=True, env={**env, "QRR_CPU_AMX": "0"})
    assert off.stdout.strip() == "False"


def test_mismatched_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="contracting sizes differ"):
        cpu_products.matmul(jnp.ones((2, 8)), jnp.ones((9, 4)))
    panels = cpu_products.pack(jnp.ones((8, 40), jnp.bfloat16))
    with pytest.raises(ValueError, match=r"does not match the packed weight \(2, 4, 32, 2\)"):
        cpu_products.packed_matmul(jnp.ones((2, 10), jnp.bfloat16), panels, 40)
    with pytest.raises(ValueError, match="float32 or bfloat16 weights, got float16"):
        cpu_products.pack(jnp.ones((8, 4), jnp.float16))


def test_routing_rules(monkeypatch):
    assert cpu_products.routed(1, jnp.bfloat16) and cpu_products.routed(128, jnp.float32)
    assert not cpu_products.routed(129, jnp.float32)  # not measured past 128 rows: XLA's products
    assert not cpu_products.routed(1, jnp.float16)
    mesh = jax.make_mesh((1,), ("tensor",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):  # a sharded product stays XLA's
        assert not cpu_products.routed(1, jnp.bfloat16)
    monkeypatch.setenv("QRR_CPU_KERNELS", "0")
    assert not cpu_products.routed(1, jnp.bfloat16)


def _kernel_calls(fn, *args):
    return jax.jit(fn).lower(*args).as_text().count("QrrPacked")  # a fresh trace each time


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cached_steps_run_on_the_kernels_and_agree_with_xla(dtype):
    """With the decoder's packed weights, every weight product of a step of two tokens a row under a cache (4 per
    layer, and the tied head) is our kernel, and the logits agree with XLA's products to the dtype's rounding.
    (A step of one token a row runs each layer as one call instead: tests/common/test_cpu_layer.py.)"""
    model = Decoder(get_preset("tiny"), dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(1))
    cfg = model.config
    prompt = jnp.asarray([[5, 9, 2, 7, 1], [3, 3, 8, 1, 4]], jnp.int32)

    def prefill_then_step(tokens, packed):
        cache = KVCache.zeros(cfg, 2, 8, model.dtype)
        _, cache = model.forward(tokens, cache=cache)
        logits, _ = model.forward(tokens[:, -2:], cache=cache, panels=model.decode_panels() if packed else None)
        return logits

    assert _kernel_calls(lambda t: prefill_then_step(t, True), prompt) == 4 * cfg.num_layers + 1
    assert _kernel_calls(lambda t: prefill_then_step(t, False), prompt) == 0
    ours = np.asarray(jax.jit(lambda t: prefill_then_step(t, True))(prompt))
    xla = np.asarray(jax.jit(lambda t: prefill_then_step(t, False))(prompt))
    tol = 1e-5 if dtype == "float32" else 2e-2
    assert np.abs(ours - xla).max() <= tol * np.abs(xla).max()


def test_sampler_decodes_on_the_kernels_with_the_same_tokens(monkeypatch):
    """The sampler packs the weights once per parameter version and decodes through the kernels; greedy tokens
    and log-probabilities equal those of XLA's products (float32)."""
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(2))
    prompts = [[5, 9, 2, 7, 1], [3, 8], [4, 4, 4, 11, 12, 13, 1]]
    sampler = Sampler(model)
    ours = sampler.sample(prompts, max_new_tokens=12)
    panels = sampler._cpu_panels(len(prompts))
    assert panels is not None and sampler._cpu_panels(1) is panels  # kept while the parameters stay
    assert sampler._cpu_panels(cpu_products.ROWS_FASTER["float32"] + 1) is None  # too many rows: XLA's
    sampler.update_params(model)  # the same arrays: still the same panels
    assert sampler._cpu_panels(1) is panels
    sampler.state = jax.tree.map(lambda a: a * 1, sampler.state)  # new arrays (a training step): packed again
    assert sampler._cpu_panels(1) is not panels
    monkeypatch.setenv("QRR_CPU_KERNELS", "0")
    xla_sampler = Sampler(model)
    assert xla_sampler._cpu_panels(len(prompts)) is None
    xla = xla_sampler.sample(prompts, max_new_tokens=12)
    assert ours.token_ids == xla.token_ids
    np.testing.assert_allclose(np.asarray(ours.logprobs), np.asarray(xla.logprobs), atol=1e-5)


def test_sampler_without_room_for_a_packed_copy_warns_and_uses_xla(monkeypatch):
    model = Decoder(get_preset("tiny"), rngs=nnx.Rngs(2))
    monkeypatch.setattr(cpu_products, "available_memory", lambda: 1000)
    sampler = Sampler(model)
    with pytest.warns(RuntimeWarning, match="not enough free memory for a packed copy"):
        assert sampler._cpu_panels(1) is None
    out = sampler.sample([[5, 9, 2]], max_new_tokens=4)
    assert len(out.token_ids[0]) == 4
