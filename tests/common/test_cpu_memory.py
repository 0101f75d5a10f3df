"""Our CPU data-movement kernels (common/kernels/cpu_memory) against jax's own ops, and the decoder's use of
them (common.model.write_slots, take_rows)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.kernels import cpu_build, cpu_memory
from common.model import take_rows, write_slots

pytestmark = pytest.mark.skipif(not cpu_build.available(), reason="no C++ compiler or CPU support: kernels off")


def _bits(a):
    return np.asarray(a).view(np.uint8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
@pytest.mark.parametrize("axis", [3, 2])  # the key cache's slot axis (minor), the value cache's
def test_write_slots_equals_dynamic_update_slice(dtype, axis):
    """Bit for bit the plain update, for one slot and for several, and with an index past the end (clamped)."""
    rng = np.random.default_rng(axis)
    cache = jnp.asarray(rng.standard_normal((2, 3, 5, 6)) * 100, dtype)
    for T, index in ((1, 4), (3, 2), (2, 5)):
        shape = list(cache.shape)
        shape[axis] = T
        new = jnp.asarray(rng.standard_normal(shape) * 100, dtype)
        got = jax.jit(lambda c, n, i: cpu_memory.write_slots(c, n, axis, i))(cache, new, index)
        ref = jax.lax.dynamic_update_slice(cache, new, tuple(index if a == axis else 0 for a in range(4)))
        assert got.dtype == cache.dtype
        np.testing.assert_array_equal(_bits(got), _bits(ref))


def test_write_slots_is_in_place_and_the_model_uses_it(monkeypatch):
    cache = jnp.zeros((2, 3, 4, 16), jnp.bfloat16)
    new = jnp.ones((2, 3, 4, 1), jnp.float32)
    compiled = jax.jit(lambda c, n: write_slots(c, n, 3, 7), donate_argnums=0).lower(cache, new).compile().as_text()
    assert "QrrWriteSlots" in compiled and "output_to_operand_aliasing" in compiled
    out = jax.jit(lambda c, n: write_slots(c, n, 3, 7))(cache, new)
    np.testing.assert_array_equal(np.asarray(out, np.float32)[..., 7], 1)
    assert float(jnp.abs(out.astype(jnp.float32)).sum()) == 2 * 3 * 4
    monkeypatch.setenv("QRR_CPU_KERNELS", "0")
    assert "QrrWriteSlots" not in jax.jit(lambda c, n: write_slots(c, n, 3, 7)).lower(cache, new).as_text()


def test_write_slots_checks_shapes():
    with pytest.raises(ValueError, match="does not fit cache"):
        cpu_memory.write_slots(jnp.zeros((2, 4, 8)), jnp.zeros((2, 3, 1)), 2, 0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_take_rows_equals_jnp_take(dtype, monkeypatch):
    """Bit for bit jnp.take, ids of any shape; an id out of range gives NaN as jnp.take's default fill; no
    float32 copy of a bf16 table."""
    table = jnp.asarray(np.random.default_rng(1).standard_normal((50, 8)), dtype)
    ids = jnp.asarray([[3, 49, 0], [7, 7, 1]], jnp.int32)
    sampled = jax.jit(lambda t, i: take_rows(t, i, sampling=True))
    got = sampled(table, ids)
    assert got.dtype == table.dtype and got.shape == (2, 3, 8)
    np.testing.assert_array_equal(_bits(got), _bits(jnp.take(table, ids, axis=0)))
    assert np.isnan(np.asarray(sampled(table, jnp.asarray([50, -1])), np.float32)).all()
    assert "f32[50,8]" not in sampled.lower(table.astype(jnp.bfloat16), ids).compile().as_text()
    assert "QrrTakeRows" in sampled.lower(table, ids).as_text()
    # training (no cache) differentiates the lookup: a plain gather
    assert "QrrTakeRows" not in jax.jit(lambda t, i: take_rows(t, i)).lower(table, ids).as_text()
    grad = jax.grad(lambda t: take_rows(t, ids).astype(jnp.float32).sum())(table)
    assert float(grad.astype(jnp.float32).sum()) == 6 * 8
    monkeypatch.setenv("QRR_CPU_KERNELS", "0")
    assert "QrrTakeRows" not in jax.jit(lambda t, i: take_rows(t, i, sampling=True)).lower(table, ids).as_text()
