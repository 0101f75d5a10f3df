"""Compiles the rollout engine's decode step for Qwen2.5-7B on v5p-64 (the recipe's slice and layout; libtpu, no
TPU) twice — from the inference copy of the weights and from the trainer's fsdp-split float32 parameters — and
once more on a layout with tensor 4 (the paged kernel's shard_map over tensor inside the engine's over the batch
axes), and the page copy of admission; prints `REPORT {...}` with per-device bytes and the all-gathers of each.
Run by tests/common/test_engine_aot.py in a clean process (libtpu is configured before JAX starts)."""

import dataclasses
import json

from common.aot.topology import prepare_libtpu_env

prepare_libtpu_env()

from common.aot.engine import compile_engine_step, compile_page_copy  # noqa: E402
from common.aot.topology import preset_devices  # noqa: E402
from common.config import get_preset  # noqa: E402
from common.mesh_presets import get_mesh_preset  # noqa: E402
from common.sharding import make_mesh  # noqa: E402

SIZE, PRESET = "qwen2_5_7b", "v5p-64"
preset = get_mesh_preset(PRESET)
data, fsdp, tensor = preset.degrees(SIZE)
mesh = make_mesh({"data": data, "fsdp": fsdp, "tensor": tensor}, preset_devices(preset))
report = {"degrees": [data, fsdp, tensor]}
for name, trainer in (("inference", False), ("trainer", True)):
    step = compile_engine_step(get_preset(SIZE), mesh, rows=256, pages_per_row=64, num_pages=2048,
                               trainer_weights=trainer)
    report[name] = {**dataclasses.asdict(step.memory), "total": step.memory.total,
                    "all_gather_bytes": list(step.all_gather_bytes)}
# the Pallas kernel's own shard_map over tensor inside the engine's over the batch axes: a layout with tensor 4
nested = make_mesh({"data": 1, "fsdp": 8, "tensor": 4}, preset_devices(preset))
step = compile_engine_step(get_preset(SIZE), nested, rows=256, pages_per_row=64, num_pages=2048)
report["tensor4"] = {**dataclasses.asdict(step.memory), "total": step.memory.total,
                     "all_gather_bytes": list(step.all_gather_bytes)}
# admission's page copies (prompt tail pages), 8 a shard, each shard within its own pool
copy = compile_page_copy(get_preset(SIZE), mesh, copies=8, num_pages=2048)
report["page_copy"] = {**dataclasses.asdict(copy.memory), "total": copy.memory.total,
                       "all_gather_bytes": list(copy.all_gather_bytes)}
print("REPORT " + json.dumps(report), flush=True)
