"""Gathering embedding rows on the CPU through our kernel (src/embedding.cc), as an XLA FFI call, in any
dtype: XLA:CPU converted or copied a whole bf16 embedding table to gather a few rows, once per sampler call.
"""

from __future__ import annotations

from cpu_kernels import build


def take_rows(table, ids):
    """table [V, d][ids] -> [*ids.shape, d]; an id outside [0, V) gives NaN (floats), as jnp.take."""
    import jax
    import jax.numpy as jnp

    if table.ndim != 2:
        raise ValueError(f"take_rows needs a table [V, d], got {table.shape}")
    build.require()
    flat = jnp.asarray(ids, jnp.int32).reshape(-1)
    rows = jax.ffi.ffi_call("QrrTakeRows", jax.ShapeDtypeStruct((flat.shape[0], table.shape[1]), table.dtype),
                            vmap_method="sequential")(table, flat)
    return rows.reshape(*jnp.shape(ids), table.shape[1])
