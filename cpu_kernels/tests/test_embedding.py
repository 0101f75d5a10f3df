"""The CPU embedding-row kernel (cpu_kernels/embedding) against jnp.take, and the backend's use of it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpu_kernels import build, embedding

pytestmark = pytest.mark.skipif(not build.available(), reason="no C++ compiler or CPU support: kernels off")


def _bits(a):
    return np.asarray(a).view(np.uint8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_take_rows_equals_jnp_take(dtype):
    """Bit for bit jnp.take, ids of any shape; an id out of range gives NaN as jnp.take's default fill; no
    float32 copy of a bf16 table."""
    table = jnp.asarray(np.random.default_rng(1).standard_normal((50, 8)), dtype)
    ids = jnp.asarray([[3, 49, 0], [7, 7, 1]], jnp.int32)
    take = jax.jit(embedding.take_rows)
    got = take(table, ids)
    assert got.dtype == table.dtype and got.shape == (2, 3, 8)
    np.testing.assert_array_equal(_bits(got), _bits(jnp.take(table, ids, axis=0)))
    assert np.isnan(np.asarray(take(table, jnp.asarray([50, -1])), np.float32)).all()
    assert "f32[50,8]" not in take.lower(table.astype(jnp.bfloat16), ids).compile().as_text()
    assert "QrrTakeRows" in take.lower(table, ids).as_text()


def test_take_rows_checks_the_table():
    with pytest.raises(ValueError, match=r"needs a table \[V, d\]"):
        embedding.take_rows(jnp.zeros((2, 3, 4)), jnp.zeros((1,), jnp.int32))
