"""One process of tests/common/test_distributed.py's 2-process run (started by tests.multiprocess): builds a
global batch from per-host rows and reports what it sees as one JSON line `REPORT {...}`."""

import json

from common.distributed import initialize

initialize()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from common.distributed import global_batch, host_local_rows, host_shard, is_main_process, to_host  # noqa: E402
from common.sharding import make_mesh, named_sharding  # noqa: E402

mesh = make_mesh({"fsdp": -1})
x = (10 * np.arange(8)[:, None] + np.arange(3)[None, :]).astype(np.int32)  # the same on every host
sharding = named_sharding(mesh, ("batch", None), x.shape)
g = global_batch(x, sharding)
replicated = NamedSharding(mesh, PartitionSpec())
total = jax.jit(jnp.sum, out_shardings=replicated)(g)
weighted = jax.jit(lambda a: (jnp.arange(8)[:, None] * a).sum(), out_shardings=replicated)(g)
report = {"process": jax.process_index(), "count": jax.process_count(), "devices": jax.device_count(),
          "local_devices": jax.local_device_count(), "main": is_main_process(),
          "rows": host_local_rows(sharding, x.shape)[0].tolist(), "host_shard": host_shard(list(range(8))),
          "sum": int(to_host(total)), "weighted": int(to_host(weighted)), "gathered": to_host(g * 1).tolist()}
print("REPORT " + json.dumps(report), flush=True)
