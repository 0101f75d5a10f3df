"""Data movement of a decode step on the CPU through our kernels (cpu_memory.cc), as XLA FFI calls: writing a
cache slot in place, and gathering embedding rows, in any dtype.

XLA:CPU rewrote a whole bf16 key cache to write one slot (the slot axis is the cache's minor one), and
converted or copied a whole bf16 embedding table to gather a few rows, once per sampler call.
`common.model.write_slots` and `common.model.take_rows` use these where `routed`: on the CPU backend outside a
mesh, where the kernels could be built (`common.kernels.cpu_build`).
"""

from __future__ import annotations

from common.kernels import cpu_build


def routed() -> bool:
    return cpu_build.usable()


def write_slots(cache, new, axis: int, index):
    """cache with `new` at slots index..index+T-1 of `axis` (T = new.shape[axis]; index clamped into
    [0, S - T] as by a dynamic-update-slice). new has the cache's dtype and, off `axis`, its shape. The result
    aliases the cache: XLA writes it in place when the cache is not needed after."""
    import jax
    import jax.numpy as jnp

    if new.dtype != cache.dtype or new.ndim != cache.ndim or any(
            a != axis and n != c for a, (n, c) in enumerate(zip(new.shape, cache.shape))):
        raise ValueError(f"new {new.shape} {new.dtype} does not fit cache {cache.shape} {cache.dtype} off axis {axis}")
    cpu_build.require()
    call = jax.ffi.ffi_call("QrrWriteSlots", jax.ShapeDtypeStruct(cache.shape, cache.dtype),
                            input_output_aliases={0: 0}, vmap_method="sequential")
    return call(cache, new, jnp.asarray(index, jnp.int32), axis=axis)


def take_rows(table, ids):
    """table [V, d][ids] -> [*ids.shape, d]; an id outside [0, V) gives NaN (floats), as jnp.take."""
    import jax
    import jax.numpy as jnp

    if table.ndim != 2:
        raise ValueError(f"take_rows needs a table [V, d], got {table.shape}")
    cpu_build.require()
    flat = jnp.asarray(ids, jnp.int32).reshape(-1)
    rows = jax.ffi.ffi_call("QrrTakeRows", jax.ShapeDtypeStruct((flat.shape[0], table.shape[1]), table.dtype),
                            vmap_method="sequential")(table, flat)
    return rows.reshape(*jnp.shape(ids), table.shape[1])
