"""Multi-process start-up and the per-host view of a global batch.

One call, `initialize()`, before anything touches a JAX device, covers three set-ups:

* a Cloud TPU pod slice (or SLURM / Open MPI): every worker runs the same command with
  `QRR_DISTRIBUTED=auto`; JAX finds the coordinator and the process ids itself;
* several GPU hosts: coordinator address, process count and id from the arguments or from the
  environment (`QRR_COORDINATOR`, `QRR_NUM_PROCESSES`, `QRR_PROCESS_ID`, `QRR_LOCAL_DEVICE_IDS`,
  or JAX's own `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, `JAX_LOCAL_DEVICE_IDS`);
* several CPU processes on one machine (tests): the same variables, collectives over gloo.

Without any of these it does nothing: one process, as on a laptop. Every host then runs the same program;
each feeds its own rows of a global batch (`host_shard`, `host_local_rows`, `global_batch`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import numpy as np

# Our variables first, then JAX's own names for the same thing.
ENV_COORDINATOR = ("QRR_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
ENV_NUM_PROCESSES = ("QRR_NUM_PROCESSES", "JAX_NUM_PROCESSES")
ENV_PROCESS_ID = ("QRR_PROCESS_ID", "JAX_PROCESS_ID")
ENV_LOCAL_DEVICE_IDS = ("QRR_LOCAL_DEVICE_IDS", "JAX_LOCAL_DEVICE_IDS")
ENV_MODE = "QRR_DISTRIBUTED"  # "auto": let JAX detect the cluster; "off": force one process
CPU_COLLECTIVES = ("gloo", "mpi", "none")


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """How this process joins the job. mode: "single" (no distributed runtime), "explicit" (coordinator,
    count and id known), "auto" (jax.distributed.initialize() detects a TPU pod, SLURM or Open MPI)."""

    mode: str
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None


def _first_env(env: Mapping[str, str], names: Sequence[str]) -> tuple[str | None, str | None]:
    for name in names:
        if env.get(name, "") != "":
            return name, env[name]
    return None, None


def _as_int(value, what: str, source: str | None) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        where = f" (from ${source})" if source else ""
        raise ValueError(f"{what} must be an integer, got {value!r}{where}") from None


def _detected_cluster(env: Mapping[str, str]) -> str | None:
    """The name of a multi-process launcher JAX can read by itself, if this environment shows one."""
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "TPU pod"
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "SLURM"
    if env.get("OMPI_MCA_orte_hnp_uri"):
        return "Open MPI"
    return None


def resolve_cluster(coordinator: str | None = None, num_processes: int | None = None,
                    process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
                    env: Mapping[str, str] | None = None) -> ClusterSpec:
    """Arguments win over environment variables; a pure function of both (no JAX calls).

    Raises ValueError naming the missing piece when only part of an explicit set-up is given.
    """
    env = os.environ if env is None else env
    mode = env.get(ENV_MODE, "").strip().lower()
    if mode not in ("", "auto", "off"):
        raise ValueError(f"${ENV_MODE} must be 'auto', 'off' or unset, got {env[ENV_MODE]!r}")
    if mode == "off":
        return ClusterSpec("single", num_processes=1, process_id=0)

    src_coord = src_num = src_id = src_local = None
    if coordinator is None:
        src_coord, coordinator = _first_env(env, ENV_COORDINATOR)
    if num_processes is None:
        src_num, value = _first_env(env, ENV_NUM_PROCESSES)
        num_processes = None if value is None else _as_int(value, "the number of processes", src_num)
    if process_id is None:
        src_id, value = _first_env(env, ENV_PROCESS_ID)
        process_id = None if value is None else _as_int(value, "the process id", src_id)
    if local_device_ids is None:
        src_local, value = _first_env(env, ENV_LOCAL_DEVICE_IDS)
        if value is not None:
            local_device_ids = [_as_int(v, "a local device id", src_local) for v in value.split(",")]
    local = tuple(int(i) for i in local_device_ids) if local_device_ids is not None else None

    if num_processes is not None and num_processes < 1:
        raise ValueError(f"the number of processes must be >= 1, got {num_processes}")
    if num_processes == 1:
        return ClusterSpec("single", num_processes=1, process_id=0, local_device_ids=local)
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if all(v is not None for v in given.values()):
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id {process_id} is outside [0, {num_processes})")
        if ":" not in coordinator:
            raise ValueError(f"coordinator {coordinator!r} must be host:port")
        return ClusterSpec("explicit", coordinator, num_processes, process_id, local)
    if mode == "auto" or _detected_cluster(env):
        return ClusterSpec("auto", coordinator, num_processes, process_id, local)
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        names = {"coordinator": ENV_COORDINATOR, "num_processes": ENV_NUM_PROCESSES,
                 "process_id": ENV_PROCESS_ID}
        hint = "; ".join(f"{k} (argument or ${' / $'.join(names[k])})" for k in missing)
        raise ValueError(f"a multi-process start needs all of coordinator, num_processes, process_id; "
                         f"missing: {hint}. Set {ENV_MODE}=auto on a TPU pod / SLURM instead.")
    return ClusterSpec("single", num_processes=1, process_id=0, local_device_ids=local)


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               local_device_ids: Sequence[int] | None = None, cpu_collectives: str = "gloo") -> ClusterSpec:
    """Joins the multi-process job this process belongs to (see the module docstring); a no-op for one
    process and when already initialised. Must run before the first JAX computation.

    cpu_collectives: cross-process collectives for CPU devices ("gloo" for tests on one machine).
    """
    import jax

    if cpu_collectives not in CPU_COLLECTIVES:
        raise ValueError(f"cpu_collectives must be one of {CPU_COLLECTIVES}, got {cpu_collectives!r}")
    spec = resolve_cluster(coordinator, num_processes, process_id, local_device_ids)
    if spec.mode == "single" or is_initialized():
        return spec
    if cpu_collectives != "none":
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    kwargs = {}
    if spec.local_device_ids is not None:
        kwargs["local_device_ids"] = list(spec.local_device_ids)
    # "auto": the unknown pieces stay None and JAX's cluster detection fills them in.
    jax.distributed.initialize(spec.coordinator, num_processes=spec.num_processes,
                               process_id=spec.process_id, **kwargs)
    return dataclasses.replace(spec, num_processes=jax.process_count(), process_id=jax.process_index())


def is_initialized() -> bool:
    """True once jax.distributed.initialize has run in this process."""
    from jax._src import distributed  # the public API has no query for this

    return distributed.global_state.client is not None


def is_main_process() -> bool:
    """True on process 0 (the one that writes logs, metadata and renames checkpoints)."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (a no-op with one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_shard(items: Sequence, process_index: int | None = None, process_count: int | None = None) -> list:
    """This host's contiguous block of a global batch of `items` (len must split evenly).

    Host p gets items[p * n/P : (p + 1) * n/P], which are the rows its devices hold when the batch axis is
    split over a mesh built from jax.devices() (devices are ordered by process).
    """
    import jax

    p = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= p < count:
        raise ValueError(f"process_index {p} is outside [0, {count})")
    if len(items) % count:
        raise ValueError(f"a global batch of {len(items)} items does not split over {count} hosts")
    per = len(items) // count
    return list(items[p * per:(p + 1) * per])


def host_local_rows(sharding, global_shape: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Per dimension, the sorted global indices this process's devices hold under `sharding`:
    `x[np.ix_(*host_local_rows(s, x.shape))]` is the process-local data `make_array_from_process_local_data`
    expects (owned blocks concatenated in order)."""
    owned: list[set[int]] = [set() for _ in global_shape]
    for index in sharding.addressable_devices_indices_map(tuple(global_shape)).values():
        for d, (sl, n) in enumerate(zip(index, global_shape)):
            owned[d].update(range(*sl.indices(n)))
    return tuple(np.asarray(sorted(o), np.int64) for o in owned)


def global_batch(x: np.ndarray, sharding):
    """A global jax.Array of the full host array `x` (identical on every host), each host contributing
    only the rows its own devices hold."""
    import jax

    x = np.asarray(x)
    local = x[np.ix_(*host_local_rows(sharding, x.shape))] if x.ndim else x
    return jax.make_array_from_process_local_data(sharding, local, x.shape)


def to_host(x) -> np.ndarray:
    """A numpy copy of a (possibly multi-host) jax.Array on every host; gathers when other hosts hold
    parts of it."""
    import jax

    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
