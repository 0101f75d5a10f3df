"""Named machine slices, and how each Qwen2.5 size is laid out on them: the one place for both.

A preset is one slice of accelerators (a Cloud TPU slice such as `v5p-64`, or a GPU host such as
`8xh100`): JAX device count, HBM per device, host count, the libtpu topology used for ahead-of-time
compilation, and the gcloud names used to create it. `layout(preset, size)` gives a model preset
(`common.config.PRESETS`) on that slice everything a run's config takes from the hardware:

* tensor: from the per-size row of the slice's HBM class (bigger models and smaller chips split heads
  over more devices); always a divisor of the model's KV heads and query heads, since the rules table in
  `common.sharding` silently replicates a dimension that a mesh axis does not divide;
* fsdp: the rest of the slice, shrunk (and `data` grown) until it divides the hidden size and the
  vocabulary rows, for the same reason;
* the gradient micro-batch per device (sequences per data x fsdp batch shard: the recipe sets
  `grpo.micro_batch_per_device`, so it splits over whatever slice runs it) and remat: the compiled memory
  plan's choices on each size's first slice (`PLANS`), one sequence per device with remat elsewhere.

The sequences per sampler call are not a preset's number: the trainer computes them from its devices'
memory and `tools/memory_plan.py` from the slice's, by one function (`common.aot.fits.rollout_chunk`
through `rl_scaling.grpo.setup.sequences_per_call`).

Configs (`configs/grpo/*.py` through `rl_scaling.grpo.defaults.paper_recipe`) and tools (`tools/launch.py`,
`tools/memory_plan.py`) choose a preset; none of them keeps numbers of its own.

Which numbers, where two copies disagreed: the paper recipe's config held tensor 2 for 14B and 4 for 32B
and global micro-batches of 16 down to 2 sequences. Those layouts were never compiled, and a micro-batch
smaller than data x fsdp (8 sequences over 32 chips for 7B) is replicated on every chip, not split. The
rows of docs/memory_plan.md were compiled by libtpu for the real chips at the degrees of this module
(14B on v5p-64 at tensor 4: 44.2 GiB update, 62.5 GiB sampler; 32B on v5p-128 at tensor 8: 51.7 / 45.9
GiB, of 95 GiB) at two sequences per device (one for 72B), so those are the numbers kept.

Device counts: a v4 / v5p "-N" name counts TensorCores (N/2 chips, one JAX device per megacore chip);
v5e / v6e names count chips. TPU `hbm_bytes` are the chip's HBM. A GPU preset's `hbm_bytes` is what JAX's
allocator may take on the card (the 80 GB H100 SXM's 81,559 MiB x the entry points' XLA_PYTHON_CLIENT_MEM_FRACTION,
`common.platform_flags`): the `memory_stats()['bytes_limit']` the trainer derives its sequences per sampler call
from, so that the plan's number and the trainer's are the same.
"""

from __future__ import annotations

import dataclasses

from common.platform_flags import GPU_MEM_FRACTION

GiB = 1024**3
H100_BYTES = 81559 * 1024**2  # the 80 GB SXM part, as nvidia-smi reports it

SIZES = ("qwen2_5_0_5b", "qwen2_5_1_5b", "qwen2_5_3b", "qwen2_5_7b", "qwen2_5_14b", "qwen2_5_32b",
         "qwen2_5_72b")

# Tensor degree per size (in SIZES order) by HBM class: small chips split heads earlier.
TENSOR_16GIB = (1, 1, 2, 4, 8, 8, 8)
TENSOR_32GIB = (1, 1, 1, 4, 8, 8, 8)
TENSOR_LARGE = (1, 1, 1, 1, 4, 8, 8)


@dataclasses.dataclass(frozen=True)
class MeshPreset:
    name: str
    platform: str  # "tpu" | "gpu"
    num_devices: int  # JAX devices in the slice
    hbm_bytes: int  # per device
    num_hosts: int
    tensor_by_size: tuple[int, ...]  # in SIZES order
    topology: str | None = None  # libtpu topology name for ahead-of-time compilation ("v5p:2x4x4")
    chip_config: str | None = None  # "megacore" for v4 / v5p (one JAX device per chip)
    accelerator_type: str | None = None  # gcloud --accelerator-type
    runtime_version: str | None = None  # gcloud --version (TPU VM image)
    zone: str | None = None  # a zone that offers the type (check `gcloud compute tpus accelerator-types list`)

    @property
    def devices_per_host(self) -> int:
        return self.num_devices // self.num_hosts

    @property
    def total_hbm_bytes(self) -> int:
        return self.num_devices * self.hbm_bytes

    def degrees(self, size: str) -> tuple[int, int, int]:
        """(data, fsdp, tensor) for model preset `size` on this slice; data * fsdp * tensor = num_devices."""
        from common.config import get_preset

        if size not in SIZES:
            raise KeyError(f"no layout for model {size!r} on {self.name}; sizes with layouts: {SIZES}")
        return split_devices(get_preset(size), self.num_devices, self.tensor_by_size[SIZES.index(size)])


def split_devices(model, num_devices: int, tensor: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor): `tensor` lowered to a divisor of the device count and of both head counts;
    fsdp the largest divisor of the remaining devices that divides the hidden size and the vocabulary rows
    (over tensor x fsdp); data the rest."""
    tensor = max(t for t in range(1, min(tensor, num_devices) + 1)
                 if num_devices % t == 0 and model.num_kv_heads % t == 0 and model.num_heads % t == 0)
    rest = num_devices // tensor
    fsdp = max(f for f in range(1, rest + 1)
               if rest % f == 0 and model.hidden_size % f == 0 and model.vocab_size % (f * tensor) == 0)
    return rest // fsdp, fsdp, tensor


def _tpu(name, topology, chips, hosts, hbm_gib, tensor, accelerator_type, runtime, zone, megacore=False):
    return MeshPreset(name=name, platform="tpu", num_devices=chips, hbm_bytes=hbm_gib * GiB, num_hosts=hosts,
                      tensor_by_size=tensor, topology=topology, chip_config="megacore" if megacore else None,
                      accelerator_type=accelerator_type, runtime_version=runtime, zone=zone)


_V4 = dict(hbm_gib=32, tensor=TENSOR_32GIB, runtime="tpu-ubuntu2204-base", zone="us-central2-b", megacore=True)
_V5E = dict(hbm_gib=16, tensor=TENSOR_16GIB, runtime="v2-alpha-tpuv5-lite", zone="us-west4-a")
_V5P = dict(hbm_gib=95, tensor=TENSOR_LARGE, runtime="v2-alpha-tpuv5", zone="us-east5-a", megacore=True)
_V6E = dict(hbm_gib=32, tensor=TENSOR_32GIB, runtime="v2-alpha-tpuv6e", zone="us-east5-b")

_ALL = [
    _tpu("v4-8", "v4:2x2x1", 4, 1, accelerator_type="v4-8", **_V4),
    _tpu("v4-16", "v4:2x2x2", 8, 2, accelerator_type="v4-16", **_V4),
    _tpu("v4-32", "v4:2x2x4", 16, 4, accelerator_type="v4-32", **_V4),
    _tpu("v4-64", "v4:2x4x4", 32, 8, accelerator_type="v4-64", **_V4),
    _tpu("v4-128", "v4:4x4x4", 64, 16, accelerator_type="v4-128", **_V4),
    _tpu("v5e-4", "v5e:2x2", 4, 1, accelerator_type="v5litepod-4", **_V5E),
    _tpu("v5e-8", "v5e:2x4", 8, 1, accelerator_type="v5litepod-8", **_V5E),
    _tpu("v5e-16", "v5e:4x4", 16, 4, accelerator_type="v5litepod-16", **_V5E),
    _tpu("v5e-64", "v5e:8x8", 64, 16, accelerator_type="v5litepod-64", **_V5E),
    _tpu("v5e-256", "v5e:16x16", 256, 64, accelerator_type="v5litepod-256", **_V5E),
    _tpu("v5p-8", "v5p:2x2x1", 4, 1, accelerator_type="v5p-8", **_V5P),
    _tpu("v5p-16", "v5p:2x2x2", 8, 2, accelerator_type="v5p-16", **_V5P),
    _tpu("v5p-64", "v5p:2x4x4", 32, 8, accelerator_type="v5p-64", **_V5P),
    _tpu("v5p-128", "v5p:4x4x4", 64, 16, accelerator_type="v5p-128", **_V5P),
    _tpu("v5p-256", "v5p:4x4x8", 128, 32, accelerator_type="v5p-256", **_V5P),
    _tpu("v6e-4", "v6e:2x2", 4, 1, accelerator_type="v6e-4", **_V6E),
    _tpu("v6e-8", "v6e:2x4", 8, 1, accelerator_type="v6e-8", **_V6E),
    _tpu("v6e-64", "v6e:8x8", 64, 16, accelerator_type="v6e-64", **_V6E),
    _tpu("v6e-256", "v6e:16x16", 256, 64, accelerator_type="v6e-256", **_V6E),
    MeshPreset("1xh100", "gpu", 1, int(H100_BYTES * GPU_MEM_FRACTION), 1, (1,) * len(SIZES)),
    MeshPreset("8xh100", "gpu", 8, int(H100_BYTES * GPU_MEM_FRACTION), 1, (1, 1, 1, 1, 8, 8, 8)),
]
PRESETS: dict[str, MeshPreset] = {p.name: p for p in _ALL}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the compiled memory plan (docs/memory_plan.md, `tools/memory_plan.py`) chose for a size on the
    slice it is planned on first."""

    slice: str
    per_device_micro_batch: int  # sequences per device (per data x fsdp batch shard) in a gradient micro-batch
    remat: bool


PLANS: dict[str, Plan] = {
    "qwen2_5_0_5b": Plan("v5e-16", 2, True),
    "qwen2_5_1_5b": Plan("v5p-8", 2, True),
    "qwen2_5_3b": Plan("v5p-16", 2, True),
    "qwen2_5_7b": Plan("v5p-64", 2, True),
    "qwen2_5_14b": Plan("v5p-64", 2, True),
    "qwen2_5_32b": Plan("v5p-128", 2, True),
    # Analytic only (compiling it needs more host memory than the plan's machine had); on v5p-128 the
    # update needs ~100 GiB per chip at one sequence each.
    "qwen2_5_72b": Plan("v5p-256", 1, True),
}
# The slice each size is planned on first (tools/launch.py's and tools/memory_plan.py's default).
RECOMMENDED: dict[str, str] = {size: plan.slice for size, plan in PLANS.items()}


@dataclasses.dataclass(frozen=True)
class Layout:
    """A size on a slice: mesh degrees, gradient micro-batch (sequences per device, and `micro_batch`: over
    the whole mesh), remat."""

    data: int
    fsdp: int
    tensor: int
    per_device_micro_batch: int
    remat: bool

    @property
    def micro_batch(self) -> int:
        """Sequences per gradient micro-batch over the whole mesh (grpo.micro_batch_size on this slice)."""
        return self.per_device_micro_batch * self.data * self.fsdp

    @property
    def mesh(self) -> dict[str, int]:
        """The `mesh` config block."""
        return {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}


def get_mesh_preset(name: str) -> MeshPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown mesh preset {name!r}; known: {sorted(PRESETS)}") from None


def layout(preset: str | MeshPreset, size: str) -> Layout:
    """How `size` runs on `preset`: the planned micro-batch and remat on its planned slice, one sequence per
    device with remat (the safest) elsewhere."""
    preset = get_mesh_preset(preset) if isinstance(preset, str) else preset
    data, fsdp, tensor = preset.degrees(size)
    plan = PLANS.get(size)
    if plan is not None and plan.slice == preset.name:
        return Layout(data, fsdp, tensor, plan.per_device_micro_batch, plan.remat)
    return Layout(data, fsdp, tensor, 1, True)


def check_layout(model, degrees: tuple[int, int, int]) -> list[str]:
    """Dimensions the rules table would replicate instead of split under `degrees` (empty = none)."""
    data, fsdp, tensor = degrees
    problems = []
    for what, n in (("KV heads", model.num_kv_heads), ("query heads", model.num_heads)):
        if n % tensor:
            problems.append(f"tensor={tensor} does not divide the {n} {what}")
    if model.hidden_size % fsdp:
        problems.append(f"fsdp={fsdp} does not divide the hidden size {model.hidden_size}")
    if model.vocab_size % (fsdp * tensor):
        problems.append(f"fsdp x tensor = {fsdp * tensor} does not divide the {model.vocab_size} vocabulary rows")
    return problems
