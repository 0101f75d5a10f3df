"""How much memory this process's first local device lets XLA allocate: the one place that asks the device,
for the budgets derived from it (the GRPO trainer's sequences per sampler call, the rollout engine's page
pool)."""

from __future__ import annotations

import jax


def device_memory_limit() -> int | None:
    """Bytes XLA may allocate on the first local device (`memory_stats()['bytes_limit']`: on a GPU the share
    XLA_PYTHON_CLIENT_MEM_FRACTION gives it, `common.platform_flags`), or None where the platform reports no
    limit (a CPU). Starts the JAX backend."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # a platform without memory statistics
        return None
    limit = (stats or {}).get("bytes_limit")
    return int(limit) if limit else None
