"""The analytic per-device memory of a training job: what each byte is for.

Exact for what is held (parameters, optimiser state, gradients, frozen reference copy; each parameter's
shard size comes from the rules table in `common.sharding`); a rough guide for activations and the sampler
(the compiler decides what lives at once and how arrays are tiled: against the TPU compiles in
docs/memory_plan.md it is off by up to about 2x either way). The compiled numbers (`common.aot.compiled`)
are the check. All sizes are bytes per device.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh

from common.config import ModelConfig
from common.model import abstract_decoder, as_dtype
from common.sharding import MESH_AXES, logical_to_spec


@dataclasses.dataclass(frozen=True)
class JobShape:
    """The sizes that decide a GRPO-like job's memory.

    micro_batch: sequences per gradient micro-batch (global, over the whole mesh: data x fsdp batch shards
    of micro_batch / (data x fsdp) sequences each);
    seq_len: prompt + response tokens of a training sequence; response_len: tokens whose logits are taken;
    remat: recompute each block's activations in the backward pass; frozen_copies: parameter copies held
    besides the policy (1 = a KL reference model), in `reference_dtype` ("" = param_dtype), on the devices
    unless `reference_on_host`; optimizer_slots: per-parameter optimiser buffers (Adam 2);
    donated: the update step reuses its input buffers for its outputs (else both are alive at its end);
    rollout_batch: the sequences a step generates; `estimate_memory` counts them in one sampler call, and
    `common.aot.fits.rollout_chunk` picks how many go in each call; prompt_len / cache_length: the sampler's
    prompt bucket and KV-cache slots per sequence; logprob_chunk: response positions whose logits exist at
    once in the update (grpo.logprob_chunk; 0 = all; the trainer always sets it: `rl_scaling.grpo.setup`).
    """

    micro_batch: int
    seq_len: int
    response_len: int
    remat: bool = True
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    frozen_copies: int = 0
    reference_dtype: str = ""
    reference_on_host: bool = False
    optimizer_slots: int = 2
    donated: bool = False
    rollout_batch: int = 0
    prompt_len: int = 0
    cache_length: int = 0
    logprob_chunk: int = 512

    def replace(self, **changes) -> "JobShape":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device. `train_peak`: during an update; `sample_peak`: during rollouts."""

    params: int
    optimizer: int
    gradients: int  # the accumulated gradients plus one micro-batch's
    reference: int
    saved_activations: int  # kept from forward to backward, all layers
    working_set: int  # the largest transient: one block's forward + backward, or the response logits
    update_outputs: int  # new parameters + optimiser state while the old are alive (no donation)
    kv_cache: int
    prefill: int  # the prompt pass's largest transient (one layer's projections, MLP and attention tiles)
    per_device_micro_batch: int
    per_device_rollouts: int

    @property
    def resident(self) -> int:
        """Held throughout the run: parameters, optimiser state, reference copy."""
        return self.params + self.optimizer + self.reference

    @property
    def train_peak(self) -> int:
        return self.resident + self.gradients + self.saved_activations + self.working_set + self.update_outputs

    @property
    def sample_peak(self) -> int:
        return self.resident + int(SAMPLER_COMPILED_RATIO * (self.kv_cache + self.prefill))

    @property
    def peak(self) -> int:
        return max(self.train_peak, self.sample_peak)


def abstract_mesh(degrees: tuple[int, int, int]) -> AbstractMesh:
    """A device-free mesh of (data, fsdp, tensor) sizes, enough for the rules table."""
    return AbstractMesh(tuple(int(d) for d in degrees), MESH_AXES)


def _shards(spec, mesh) -> int:
    n = 1
    for entry in spec:
        for axis in (entry if isinstance(entry, tuple) else (entry,)):
            if axis is not None:
                n *= mesh.shape[axis]
    return n


@functools.lru_cache(maxsize=64)
def parameter_layout(config: ModelConfig, param_dtype="float32") -> tuple[tuple[tuple[int, ...], tuple, int, int], ...]:
    """(shape, logical axes, bytes per element, copies) of every distinct parameter. The layers are identical,
    so one layer is built (abstractly) and counted num_layers times: a 72B model's structure in a second.
    A layer's parameter is one under the `layers` path (a list of blocks) or one whose first logical axis is
    `layers` (scanned blocks: stacked [num_layers, ...], here [1, ...])."""
    one = config.replace(num_layers=1)
    state = nnx.state(abstract_decoder(one, param_dtype=param_dtype), nnx.Param)
    out = []
    for path, var in nnx.to_flat_state(state):
        axes = tuple(var.get_metadata()["logical_axes"])
        per_layer = path[0] == "layers" or (len(axes) > 0 and axes[0] == "layers")
        out.append((tuple(var.shape), axes, np.dtype(var.dtype).itemsize, config.num_layers if per_layer else 1))
    return tuple(out)


def param_bytes_per_device(config: ModelConfig, degrees: tuple[int, int, int], param_dtype="float32",
                           rules=None) -> int:
    """Bytes of one device's shard of every parameter, by the rules table (`rules`, default LOGICAL_RULES; a
    dimension that a mesh axis does not divide is replicated over that axis, as in
    `common.sharding.logical_to_spec`)."""
    mesh = abstract_mesh(degrees)
    total = 0
    for shape, axes, itemsize, copies in parameter_layout(config, str(param_dtype)):
        spec = logical_to_spec(axes, shape, mesh, **({} if rules is None else {"rules": rules}),
                               warn=False)  # planning, not placing: no warning
        total += copies * math.ceil(math.prod(shape) / _shards(spec, mesh)) * itemsize
    return total


def _split(n: int, ways: int) -> int:
    """Per-device share of a dimension of size n over `ways` devices (whole when it does not divide)."""
    return n // ways if ways > 1 and n % ways == 0 else n


# The compiled sampler program (prefill + decode, TPU, 2026-12-06) held 0.8-1.8x the analytic KV cache plus
# one layer's prefill transients at the largest call that fit: Qwen2.5-0.5B 1.5x, 1.5B 0.8x, 3B 1.75x,
# 7B 1.8x (docs/memory_plan.md). The plan takes the upper end, so that the calls the trainer makes fit.
SAMPLER_COMPILED_RATIO = 1.8

# Query x key slots of one attention tile: attention is blockwise (online softmax) on every backend, so a
# layer's scores exist a tile row at a time, never [T, T] (`common.attention`).
ATTENTION_TILE = 256


def estimate_memory(config: ModelConfig, degrees: tuple[int, int, int], shape: JobShape) -> MemoryEstimate:
    """The per-device breakdown. Activation terms follow what XLA was seen to keep when compiling the GRPO
    update for TPU (docs/memory_plan.md), roughly (see the module docstring):

    * with remat, per layer: about 3.4 float32 copies of the block input [b, T, d] and 1.4 copies of the
      layer's weights gathered over fsdp (compute dtype); without remat, per layer: the projections and the
      MLP hidden, and the gathered weights (attention keeps its output and log-normaliser, not scores);
    * the working set: the larger of one block's attention tiles (a row of [ATTENTION_TILE] slots per query,
      1.5 float32 copies) and the response logits of one log-prob chunk (about 5 float32 copies of
      [b, chunk, V]: logits, log-softmax, the softmax and product of the entropy term, and the gradient);
    * the prefill: one layer's projections and MLP hidden over every prompt token of the call, and its
      attention tiles.
    """
    data, fsdp, tensor = degrees
    act = as_dtype(shape.dtype).itemsize
    params = param_bytes_per_device(config, degrees, shape.param_dtype)
    b = _split(shape.micro_batch, data * fsdp)
    T, R, d, L = shape.seq_len - 1, shape.response_len, config.hidden_size, config.num_layers
    heads, kv, F = _split(config.num_heads, tensor), _split(config.num_kv_heads, tensor), _split(
        config.intermediate_size, tensor)
    h, V = config.head_dim, _split(config.vocab_size, tensor)
    layer_weights = (d * (2 * heads + 2 * kv) * h + 3 * d * F) * act  # gathered over fsdp, split over tensor
    tiles = b * heads * T * min(T, ATTENTION_TILE) * 4
    if shape.remat:
        saved = L * (int(b * 3.4 * T * d * 4) + int(1.4 * layer_weights))
    else:
        saved = L * (b * T * (6 * d + 3 * F) * act + b * heads * T * 4 + layer_weights)
    logit_rows = min(R, shape.logprob_chunk) if shape.logprob_chunk > 0 else R
    working = max(int(1.5 * tiles), 5 * b * logit_rows * V * 4)
    r = _split(shape.rollout_batch, data * fsdp) if shape.rollout_batch else 0
    reference = 0 if shape.reference_on_host or not shape.frozen_copies else shape.frozen_copies * (
        param_bytes_per_device(config, degrees, shape.reference_dtype or shape.param_dtype))
    return MemoryEstimate(params=params, optimizer=params * shape.optimizer_slots, gradients=2 * params,
                          reference=reference, saved_activations=saved, working_set=working,
                          update_outputs=0 if shape.donated else params * (1 + shape.optimizer_slots),
                          kv_cache=r * shape.cache_length * 2 * L * kv * h * act,
                          prefill=r * shape.prompt_len * (
                              (3 * F + 2 * (heads + 2 * kv) * h + 2 * d) * act
                              + 2 * heads * min(shape.prompt_len, ATTENTION_TILE) * 4),
                          per_device_micro_batch=b, per_device_rollouts=r)
