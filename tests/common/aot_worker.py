"""Compiles the tiny model's GRPO update step and sampler for a TPU v5e 2x2 slice (libtpu, no TPU) and prints
`REPORT {...}` with the per-device bytes; run by tests/common/test_aot.py in a clean process, since libtpu
must be configured before JAX starts (common.aot.topology.prepare_libtpu_env)."""

import dataclasses
import json
import sys
from pathlib import Path

from common.aot.topology import prepare_libtpu_env

prepare_libtpu_env()

import jax  # noqa: E402

from common.aot.topology import tpu_devices  # noqa: E402
from common.config import get_preset  # noqa: E402
from common.config_file import load_config  # noqa: E402
from common.sharding import make_mesh  # noqa: E402
from rl_scaling.grpo.setup import job_shape  # noqa: E402
from tools.memory_plan import compile_sampler, compile_update  # noqa: E402

PROMPT, RESPONSE = 16, 16

cfg = load_config(Path(__file__).resolve().parents[2] / "configs/grpo/tiny.py")
cfg.grpo.max_response_len = RESPONSE
devices = tpu_devices(sys.argv[1] if len(sys.argv) > 1 else "v5e:2x2")
mesh = make_mesh({"fsdp": 4}, devices)
shape = job_shape(cfg, PROMPT)
model = get_preset("tiny")
update = compile_update(model, mesh, shape, cfg)
sampler = compile_sampler(model, mesh, shape, batch=16)
print("REPORT " + json.dumps({"device_kind": devices[0].device_kind, "num_devices": len(devices),
                              "platform": jax.devices()[0].platform, "shape": dataclasses.asdict(shape),
                              "update": dataclasses.asdict(update), "sampler": dataclasses.asdict(sampler)}),
      flush=True)
