"""Does a job fit its chips? `check_fits` raises before anything starts, and says what to change."""

from __future__ import annotations

from common.aot.estimate import JobShape, MemoryEstimate, estimate_memory
from common.config import ModelConfig

GiB = 1024**3
# Share of a device's HBM a plan may use: XLA and the runtime keep some for themselves.
DEFAULT_HEADROOM = 0.9


class MemoryPlanError(ValueError):
    """A job needs more memory per device than its chips have."""


def gib(n: int | float) -> str:
    return f"{n / GiB:.1f} GiB"


def training_remedies(config: ModelConfig, degrees: tuple[int, int, int], shape: JobShape,
                      estimate: MemoryEstimate, num_devices: int, budget: int) -> list[str]:
    """What to change when the update does not fit, biggest lever first: more chips / more fsdp when held
    state dominates; remat, a smaller micro-batch, more tensor parallelism when activations do."""
    data, fsdp, tensor = degrees
    out = []
    held = estimate.resident + estimate.gradients + estimate.update_outputs
    if held > 0.5 * budget:
        shards = fsdp * tensor
        if data > 1:
            out.append(f"move data parallelism into fsdp (mesh data={data} -> 1, fsdp={fsdp} -> {fsdp * data})")
        out.append(f"more chips: parameters, optimiser state and gradients take {gib(held)} per device over "
                   f"{shards} shards; about {int(shards * held / (0.5 * budget)) + 1} shards would leave room "
                   f"(a bigger slice; {num_devices} devices now)")
        if not shape.donated:
            out.append(f"donate parameters and optimiser state to the update step (saves {gib(estimate.update_outputs)})")
        if shape.param_dtype == "float32":
            out.append("model.param_dtype='bfloat16' (halves parameters, gradients and Adam state)")
    if not shape.remat:
        out.append("model.remat=True (recompute each block in the backward pass)")
    if estimate.per_device_micro_batch > 1:
        out.append(f"a smaller micro-batch: grpo.micro_batch_size={shape.micro_batch} -> {shape.micro_batch // 2} "
                   f"({estimate.per_device_micro_batch} sequences per device now)")
    if config.num_kv_heads % (2 * tensor) == 0 and num_devices % (2 * tensor) == 0:
        out.append(f"more tensor parallelism (mesh tensor={tensor} -> {2 * tensor}, fsdp={fsdp} -> "
                   f"{max(fsdp // 2, 1)}) to split heads, MLP and vocabulary activations")
    out.append(f"shorter sequences (grpo.max_response_len={shape.response_len}; {shape.seq_len} tokens per sequence)")
    return out


def sampling_remedies(shape: JobShape, estimate: MemoryEstimate, degrees: tuple[int, int, int],
                      fitting_batch: int) -> list[str]:
    """What to change when the rollouts' KV cache does not fit."""
    data, fsdp, _ = degrees
    out = [f"fewer sequences per sampler call: {shape.rollout_batch} now ({estimate.per_device_rollouts} per "
           f"device, KV cache {gib(estimate.kv_cache)} per device)"
           + (f"; {fitting_batch} would fit" if fitting_batch else "")]
    out.append(f"more chips on data/fsdp (the batch splits over data x fsdp = {data * fsdp} devices)")
    out.append(f"shorter responses (grpo.max_response_len={shape.response_len})")
    return out


def largest_fitting_rollout_batch(config: ModelConfig, degrees, shape: JobShape, budget: int) -> int:
    """The largest power-of-two share of shape.rollout_batch whose sampling peak fits (0 if none)."""
    b = shape.rollout_batch
    while b >= degrees[0] * degrees[1]:
        if estimate_memory(config, degrees, shape.replace(rollout_batch=b)).sample_peak <= budget:
            return b
        b //= 2
    return 0


def check_fits(config: ModelConfig, degrees: tuple[int, int, int], shape: JobShape, *, hbm_bytes: int,
               num_devices: int, label: str = "", compiled_peak: int | None = None,
               headroom: float = DEFAULT_HEADROOM) -> MemoryEstimate:
    """Returns the estimate when the job fits, else raises MemoryPlanError naming the remedies.

    compiled_peak: the compiler's per-device total, when known; it replaces the analytic training peak.
    """
    estimate = estimate_memory(config, degrees, shape)
    budget = int(hbm_bytes * headroom)
    train = compiled_peak if compiled_peak is not None else estimate.train_peak
    if max(train, estimate.sample_peak) <= budget:
        return estimate
    if train > budget:
        phase, need = "training update", train
        fixes = training_remedies(config, degrees, shape, estimate, num_devices, budget)
    else:
        phase, need = "rollout sampling", estimate.sample_peak
        fixes = sampling_remedies(shape, estimate, degrees,
                                  largest_fitting_rollout_batch(config, degrees, shape, budget))
    lines = "\n  - ".join(fixes)
    data, fsdp, tensor = degrees
    raise MemoryPlanError(
        f"{label or 'job'} does not fit: the {phase} needs {gib(need)} per device, the chips have "
        f"{gib(hbm_bytes)} ({gib(budget)} usable) with mesh data={data} fsdp={fsdp} tensor={tensor}. "
        f"Held per device: params {gib(estimate.params)}, optimiser {gib(estimate.optimizer)}, "
        f"gradients {gib(estimate.gradients)}, reference {gib(estimate.reference)}, "
        f"KV cache {gib(estimate.kv_cache)}. Change one of:\n  - {lines}")
