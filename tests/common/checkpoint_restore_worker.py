"""One process of a 2-process restore (tests/common/test_checkpoint_topologies.py): loads a checkpoint saved
by a single process onto a mesh over both processes' devices and prints `REPORT {...}` with its logits.

    python tests/common/checkpoint_restore_worker.py CHECKPOINT_DIR tensor=2
"""

import json
import sys

from common.distributed import initialize

initialize()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from common.checkpoint.orbax_io import load_checkpoint  # noqa: E402
from common.sharding import make_mesh  # noqa: E402

directory, mesh_arg = sys.argv[1], sys.argv[2]
shape = {"fsdp": -1, **{k: int(v) for k, v in (item.split("=") for item in mesh_arg.split(","))}}
mesh = make_mesh(shape)
model = load_checkpoint(directory, mesh=mesh)
tokens = np.random.RandomState(0).randint(1, 512, (8, 12)).astype(np.int32)  # as the test's TOKENS
graphdef, state = nnx.split(model)  # arguments, not constants: other hosts hold parts of them
with jax.set_mesh(mesh):
    logits = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t), out_shardings=NamedSharding(mesh, PartitionSpec()))(
        state, tokens)
logits = np.asarray(logits)
print("REPORT " + json.dumps({"devices": jax.device_count(), "q_spec": repr(model.layers.attn.qkv_kernel[...].sharding.spec),
                              "logits_sum": logits.sum(axis=(1, 2)).tolist(), "logits_00": logits[0, 0].tolist()}),
      flush=True)
