"""Does a job fit its chips? `check_fits` raises before anything starts, and says what to change."""

from __future__ import annotations

from common.aot.estimate import JobShape, MemoryEstimate, estimate_memory
from common.config import ModelConfig
from common.prefill_plan import bucket

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
        b = estimate.per_device_micro_batch
        out.append(f"a smaller micro-batch: grpo.micro_batch_per_device={b} -> {b // 2} (grpo.micro_batch_size="
                   f"{shape.micro_batch} -> {shape.micro_batch // 2} over the whole mesh)")
    if config.num_kv_heads % (2 * tensor) == 0 and num_devices % (2 * tensor) == 0:
        out.append(f"more tensor parallelism (mesh tensor={tensor} -> {2 * tensor}, fsdp={fsdp} -> "
                   f"{max(fsdp // 2, 1)}) to split heads, MLP and vocabulary activations")
    out.append(f"shorter sequences (grpo.max_response_len={shape.response_len}; {shape.seq_len} tokens per sequence)")
    return out


def sampling_remedies(shape: JobShape, estimate: MemoryEstimate, degrees: tuple[int, int, int],
                      fitting_batch: int) -> list[str]:
    """What to change when the rollouts' KV cache does not fit."""
    data, fsdp, _ = degrees
    out = [f"fewer sequences per sampler call (grpo.rollout_batch): {shape.rollout_batch} now "
           f"({estimate.per_device_rollouts} per device, KV cache {gib(estimate.kv_cache)} per device)"
           + (f"; {fitting_batch} would fit" if fitting_batch else "")]
    out.append(f"more chips on data/fsdp (the batch splits over data x fsdp = {data * fsdp} devices)")
    out.append(f"shorter responses (grpo.max_response_len={shape.response_len})")
    return out


def rollout_chunk(config: ModelConfig, degrees: tuple[int, int, int], shape: JobShape, hbm_bytes: int,
                  headroom: float = DEFAULT_HEADROOM) -> int:
    """Sequences per sampler call: what the GRPO trainer generates at once and what the memory plan
    (tools/memory_plan.py) compiles; 0 when not even data x fsdp sequences (one per batch shard) fit.

    The largest power of two, at most the bucket of `shape.rollout_batch` (the step's sequences), whose
    sampling peak (parameters, optimiser state and reference copy held, plus the KV cache of
    `shape.cache_length` slots and the prefill of `shape.prompt_len` tokens per sequence) stays under
    `headroom` x `hbm_bytes` per device, capped at `shape.rollout_batch`. Powers of two because the sampler
    pads a call's batch to one (`common.prefill_plan.bucket`): a call of n sequences holds a cache of
    bucket(n) rows. A multiple of any power-of-two group size, so calls hold whole prompt groups.
    """
    budget = hbm_bytes * headroom
    n = shape.rollout_batch
    b = bucket(n, 1)
    while b >= degrees[0] * degrees[1]:
        if estimate_memory(config, degrees, shape.replace(rollout_batch=b)).sample_peak <= budget:
            return min(b, n)
        b //= 2
    return 0


def check_fits(config: ModelConfig, degrees: tuple[int, int, int], shape: JobShape, *, hbm_bytes: int,
               num_devices: int, label: str = "", compiled_peak: int | None = None,
               headroom: float = DEFAULT_HEADROOM, sequences_per_call: int | None = None) -> MemoryEstimate:
    """Returns the estimate (its KV cache: one sampler call's) when the job fits, else raises MemoryPlanError
    naming the remedies.

    compiled_peak: the compiler's per-device total, when known; it replaces the analytic training peak.
    sequences_per_call: the size of the sampler calls (grpo.rollout_batch when a run sets it); None = what
    the trainer picks, `rollout_chunk` (data x fsdp when not even that fits).
    """
    per_call = sequences_per_call or rollout_chunk(config, degrees, shape, hbm_bytes, headroom) or min(
        degrees[0] * degrees[1], shape.rollout_batch)
    estimate = estimate_memory(config, degrees, shape.replace(rollout_batch=per_call))
    budget = int(hbm_bytes * headroom)
    train = compiled_peak if compiled_peak is not None else estimate.train_peak
    if max(train, estimate.sample_peak) <= budget:
        return estimate
    if train > budget:
        phase, need = "training update", train
        fixes = training_remedies(config, degrees, shape, estimate, num_devices, budget)
    else:
        phase, need = "rollout sampling", estimate.sample_peak
        fixes = sampling_remedies(shape.replace(rollout_batch=per_call), estimate, degrees,
                                  rollout_chunk(config, degrees, shape, hbm_bytes, headroom))
    lines = "\n  - ".join(fixes)
    data, fsdp, tensor = degrees
    raise MemoryPlanError(
        f"{label or 'job'} does not fit: the {phase} needs {gib(need)} per device, the chips have "
        f"{gib(hbm_bytes)} ({gib(budget)} usable) with mesh data={data} fsdp={fsdp} tensor={tensor}. "
        f"Held per device: params {gib(estimate.params)}, optimiser {gib(estimate.optimizer)}, "
        f"gradients {gib(estimate.gradients)}, reference {gib(estimate.reference)}, "
        f"KV cache {gib(estimate.kv_cache)}. Change one of:\n  - {lines}")
