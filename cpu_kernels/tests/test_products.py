"""The CPU decode products (cpu_kernels/products): the packed layout against numpy, products against numpy in
float64, however the threads split the panels; AMX where the CPU has it; clear errors. (The decoder and the
sampler on them: test_backend.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpu_kernels import build, products

pytestmark = pytest.mark.skipif(not build.available(), reason="no C++ compiler or CPU support: kernels off")


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
    got = np.asarray(jax.jit(products.pack, static_argnums=1)(
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
    got = np.asarray(jax.jit(products.matmul, static_argnums=2)(x, w, transposed))
    ref = _reference(x, w, transposed)
    assert got.dtype == np.float32 and got.shape == (rows, N)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_large_products_split_over_threads_match_numpy():
    """Large enough that every intra-op thread takes its own panels."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8, 1536)), jnp.bfloat16)
    for transposed, shape in ((False, (1536, 3072)), (True, (49152 // 4, 1536))):
        w = jnp.asarray(rng.standard_normal(shape), jnp.bfloat16)
        got = np.asarray(jax.jit(products.matmul, static_argnums=2)(x, w, transposed))
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
    packed = jax.jit(products.pack)(w)
    product = jax.jit(products.packed_matmul, static_argnums=2)
    for _ in range(20):
        x = jnp.asarray(rng.standard_normal((2, K)), jnp.float32)
        got = np.asarray(product(x, packed, N))
        ref = _reference(x, w, False)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("rows", [8, 16, 17, 40, 64, 592, 600])
@pytest.mark.parametrize("K", [64, 576])
def test_many_row_bfloat16_products_match_numpy(rows, K):
    """Contracting sizes that are multiples of 32: on a CPU with AMX these run on its tiles (src/amx.h), in blocks
    of 16 rows and one last block of 1-16; elsewhere on the vector tiles. A last panel of 13 columns. Full blocks
    go in pairs (40, 592 rows: the last block alone; 64, 600: an odd full block rides with it), in groups of pairs
    (at K = 576, 592 and 600 rows take three groups)."""
    rng = np.random.default_rng(rows + K)
    N = 32 * 5 + 13
    x = jnp.asarray(rng.standard_normal((rows, K)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((K, N)), jnp.bfloat16)
    got = np.asarray(jax.jit(products.matmul)(x, w))
    ref = _reference(x, w, False)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.skipif(not build.cpu_has_amx(), reason="the CPU has no AMX tiles")
def test_amx_tiles_are_used_where_the_cpu_has_them(monkeypatch):
    """A CPU with AMX-BF16 runs the many-row bfloat16 products on its tiles unless QRR_CPU_AMX=0 (a build without
    the tile intrinsics, or a refused arch_prctl, would silently fall back to the vector tiles)."""
    import os
    import subprocess
    import sys

    ask = [sys.executable, "-c", "from cpu_kernels import build; print(build.amx())"]
    env = {k: v for k, v in os.environ.items() if k != "QRR_CPU_AMX"}
    assert subprocess.run(ask, capture_output=True, text=True, env=env).stdout.strip() == "True"
    off = subprocess.run(ask, capture_output=True, text=True, env={**env, "QRR_CPU_AMX": "0"})
    assert off.stdout.strip() == "False"


def test_mismatched_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="contracting sizes differ"):
        products.matmul(jnp.ones((2, 8)), jnp.ones((9, 4)))
    panels = products.pack(jnp.ones((8, 40), jnp.bfloat16))
    with pytest.raises(ValueError, match=r"does not match the packed weight \(2, 4, 32, 2\)"):
        products.packed_matmul(jnp.ones((2, 10), jnp.bfloat16), panels, 40)
    with pytest.raises(ValueError, match="float32 or bfloat16 weights, got float16"):
        products.pack(jnp.ones((8, 4), jnp.float16))
