"""How long one step of the RL scaling recipe takes on a slice, and what the paper's run costs in chip-hours.

A roofline estimate, beside the memory plan (docs/memory_plan.md); `tools/time_plan.py` writes it as
docs/time_plan.md. One step is four phases:

* rollout decode: bound by the bytes each chip moves per decode step, at a share of the chip's HBM
  bandwidth, for the rollout the trainer runs there (`SliceLayout.rollout`). The engine (`common.engine`, the
  trainer's choice on every accelerator): its bfloat16 inference copy of the weights, whole on each chip but
  for the tensor split, and the live pages of the sequences its batch shard holds (a sequence's prompt and
  the response so far, in pages of PAGE tokens). The static sampler: the same bytes of weights, gathered over
  fsdp before each product, and every allocated KV-cache slot of the sequences it holds (its attention reads
  them all). Two other bounds are taken when they are slower: the weight gather over the interconnect
  (ICI / NVLink; the static sampler only) and the decode FLOPs. Decode steps per call = the response length,
  calls = the step's sequences / the sequences in flight per call;
* prefill, the log-prob passes (old policy and reference) and the update (forward + backward, plus one
  more forward where the layout recomputes activations, remat): FLOPs from `rl_scaling.accounting.step_compute`
  (the ledger's count, attention and LM head included), at a share (MFU) of the slice's peak bf16 FLOP/s.

Not counted: the optimiser's own arithmetic, gradient reductions, reward grading, host work, padding to
length buckets, and compiles. All sequences of a step are taken to have the same lengths (`Lengths`).
"""

from __future__ import annotations

import dataclasses
import math

from rl_scaling.accounting import causal_context_tokens, non_embedding_params, step_compute

GB = 1e9
BF16_BYTES = 2
PAGE = 16  # tokens a page of the engine's pool (grpo.engine_page_size's default)
ROLLOUTS = ("engine", "static")  # the paged engine, the static sampler (`common.rollout.pick_rollout_engine`)


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """Per chip (a JAX device: a v4 / v5p megacore chip, one GPU): dense bf16 FLOP/s, HBM bandwidth (bytes/s),
    interconnect bandwidth (bytes/s one way, what an all-gather can receive; None where not published). HBM
    capacity is the slice's, `common.mesh_presets.MeshPreset.hbm_bytes`."""

    name: str
    peak_flops: float
    hbm_bandwidth: float
    ici_bandwidth: float | None
    source: str


CHIPS: dict[str, ChipSpec] = {c.name: c for c in (
    # cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 1200 GBps HBM; no per-chip ICI figure on that page.
    ChipSpec("v4", 275e12, 1200 * GB, None, "cloud.google.com/tpu/docs/v4"),
    # cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 819 GBps HBM, ICI 1600 Gbps (200 GB/s).
    ChipSpec("v5e", 197e12, 819 * GB, 200 * GB, "cloud.google.com/tpu/docs/v5e"),
    # cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 2765 GBps HBM, ICI 4800 Gbps (bidirectional 1200 GBps).
    ChipSpec("v5p", 459e12, 2765 * GB, 600 * GB, "cloud.google.com/tpu/docs/v5p"),
    # cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 1640 GBps HBM, bidirectional ICI 800 GBps.
    ChipSpec("v6e", 918e12, 1640 * GB, 400 * GB, "cloud.google.com/tpu/docs/v6e"),
    # NVIDIA H100 SXM datasheet: 989 TFLOP/s dense bf16 (1979 with sparsity), 3.35 TB/s HBM3, NVLink 900 GB/s
    # (both directions).
    ChipSpec("h100", 989e12, 3350 * GB, 450 * GB, "nvidia.com/en-us/data-center/h100 (SXM)"),
    # NVIDIA H200 SXM datasheet: 989 TFLOP/s dense bf16, 4.8 TB/s HBM3e, NVLink 900 GB/s (both directions).
    ChipSpec("h200", 989e12, 4800 * GB, 450 * GB, "nvidia.com/en-us/data-center/h200 (SXM)"),
)}


def chip_of(preset) -> ChipSpec:
    """The chip of a `common.mesh_presets.MeshPreset`: "v5p-64" -> v5p, "8xh100" -> h100."""
    name = preset.name.split("-")[0] if preset.platform == "tpu" else preset.name.split("x", 1)[-1]
    if name not in CHIPS:
        raise KeyError(f"no chip spec for {preset.name!r} ({name!r}); known chips: {sorted(CHIPS)}")
    return CHIPS[name]


@dataclasses.dataclass(frozen=True)
class Shares:
    """The shares of peak a step is assumed to reach: FLOP/s (MFU), HBM and interconnect bandwidth."""

    mfu: float = 0.4
    hbm: float = 0.6
    ici: float = 0.6

    def __post_init__(self):
        for name in ("mfu", "hbm", "ici"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"share {name} must be in (0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Lengths:
    """Tokens of every sequence of a step: prompt and response."""

    prompt: int
    response: int

    def __post_init__(self):
        if self.prompt < 1 or self.response < 1:
            raise ValueError(f"lengths must be >= 1 token, got prompt {self.prompt}, response {self.response}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a step does: sequences (prompts x group size), which forward passes, passes over the batch; and
    how many steps a run has."""

    prompts_per_step: int
    group_size: int
    kl_coef: float
    old_logprob_forward: bool
    ppo_epochs: int
    steps: int

    @property
    def sequences(self) -> int:
        return self.prompts_per_step * self.group_size

    @classmethod
    def from_config(cls, cfg, steps: int) -> "Recipe":
        g = cfg.grpo
        return cls(prompts_per_step=int(g.prompts_per_step), group_size=int(g.group_size),
                   kl_coef=float(g.kl_coef), old_logprob_forward=g.old_logprobs == "recompute",
                   ppo_epochs=int(g.get("ppo_epochs", 1)), steps=int(steps))


@dataclasses.dataclass(frozen=True)
class SliceLayout:
    """A size laid out on a slice: chips, their spec, mesh degrees, remat, sequences in flight per rollout call,
    and which rollout decodes (ROLLOUTS: the trainer's auto choice on an accelerator is the engine)."""

    preset: str
    chip: ChipSpec
    chips: int
    data: int
    fsdp: int
    tensor: int
    remat: bool
    in_flight: int
    rollout: str = "engine"

    def __post_init__(self):
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"rollout must be one of {ROLLOUTS}, got {self.rollout!r}")
        if self.data * self.fsdp * self.tensor != self.chips:
            raise ValueError(f"mesh {self.data}x{self.fsdp}x{self.tensor} does not cover {self.chips} chips")
        if self.in_flight < 1:
            raise ValueError(f"sequences in flight must be >= 1, got {self.in_flight}")

    def replace(self, **changes) -> "SliceLayout":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class PhaseFlops:
    """FLOPs of one step by phase (whole slice). prefill + decode + logprob + update = the ledger's C_full;
    `remat` is the recomputed forward on top of it; `c_paper` the ledger's C (6 N T)."""

    prefill: int
    decode: int
    logprob: int
    update: int
    remat: int
    c_paper: int
    c_full: int


def phase_flops(model, recipe: Recipe, lengths: Lengths, remat: bool) -> PhaseFlops:
    """The ledger's count (`step_compute`) of one step where every sequence has `lengths`, split by phase:
    prompt-side attention goes to prefill, the rest of the rollout's attention and LM head to decode."""
    n = recipe.sequences
    seq = lengths.prompt + lengths.response
    sc = step_compute(model, lengths.prompt * n, lengths.response * n, sequence_lengths=[seq] * n,
                      kl_coef=recipe.kl_coef, old_logprob_forward=recipe.old_logprob_forward,
                      ppo_epochs=recipe.ppo_epochs)
    extra = int(recipe.old_logprob_forward) + int(recipe.kl_coef > 0)  # forwards besides the rollout's
    passes = 1 + extra + 3 * recipe.ppo_epochs  # accounting counts attention and LM head this many times
    attention, head = sc.attention // passes, sc.lm_head // passes  # one forward's
    prompt_attention = attention * causal_context_tokens([lengths.prompt]) // causal_context_tokens([seq])
    return PhaseFlops(
        prefill=sc.rollout_prefill + prompt_attention,
        decode=sc.rollout_decode + attention - prompt_attention + head,
        logprob=sc.old_logprob_forward + sc.reference_forward + extra * (attention + head),
        update=sc.training + 3 * recipe.ppo_epochs * (attention + head),
        remat=recipe.ppo_epochs * (sc.training // (3 * recipe.ppo_epochs) + attention + head) if remat else 0,
        c_paper=sc.c_paper, c_full=sc.c_full)


def rollout_weight_bytes(model, tensor: int) -> int:
    """Bytes of bfloat16 weights one chip multiplies by in a decode step: the decoder stack and the LM head
    (the input embedding is read one row per sequence, not counted), over the tensor split."""
    return BF16_BYTES * (non_embedding_params(model) + model.vocab_size * model.hidden_size) // tensor


def kv_bytes_per_slot(model, tensor: int) -> int:
    """Bytes of one cache slot of one sequence on one chip: K and V, every layer, the chip's KV heads, bf16."""
    return 2 * model.num_layers * math.ceil(model.num_kv_heads / tensor) * model.head_dim * BF16_BYTES


@dataclasses.dataclass(frozen=True)
class DecodeTime:
    """A step's rollout decode. Bytes are per chip per decode step; seconds for the whole step."""

    calls: int
    steps: int  # decode steps over all calls
    sequences_per_chip: int
    weight_bytes: int
    kv_bytes: int
    gather_bytes: int  # weights received over the interconnect (fsdp gather)
    hbm_seconds: float
    gather_seconds: float
    flops_seconds: float

    @property
    def seconds(self) -> float:
        return max(self.hbm_seconds, self.gather_seconds, self.flops_seconds)

    @property
    def bound(self) -> str:
        """Which bound sets the time: "HBM", "ICI" or "FLOPs"."""
        return max((self.hbm_seconds, "HBM"), (self.gather_seconds, "ICI"), (self.flops_seconds, "FLOPs"))[1]


def decode_time(model, recipe: Recipe, lengths: Lengths, layout: SliceLayout, shares: Shares,
                decode_flops: int) -> DecodeTime:
    """Decode seconds of one step: decode steps x bytes per chip per decode step / (HBM bandwidth x share),
    or the interconnect or FLOP bound when slower. The static sampler's cache holds prompt + response slots per
    sequence and its weights are gathered over fsdp; the engine reads the live pages (on average over a
    response: the prompt, half the response and half a page) and decodes from its inference copy."""
    calls = math.ceil(recipe.sequences / layout.in_flight)
    steps = calls * lengths.response
    per_chip = math.ceil(layout.in_flight / (layout.data * layout.fsdp))
    weights = rollout_weight_bytes(model, layout.tensor)
    if layout.rollout == "engine":
        live = lengths.prompt + math.ceil((lengths.response + PAGE) / 2)
        kv, gather = per_chip * live * kv_bytes_per_slot(model, layout.tensor), 0
    else:
        kv = per_chip * (lengths.prompt + lengths.response) * kv_bytes_per_slot(model, layout.tensor)
        gather = weights * (layout.fsdp - 1) // layout.fsdp
    chip = layout.chip
    if gather and chip.ici_bandwidth is None:
        raise ValueError(f"{chip.name} has no interconnect bandwidth in CHIPS: cannot time the fsdp gather")
    gather_s = steps * gather / (chip.ici_bandwidth * shares.ici) if gather else 0.0
    return DecodeTime(calls=calls, steps=steps, sequences_per_chip=per_chip, weight_bytes=weights, kv_bytes=kv,
                      gather_bytes=gather, hbm_seconds=steps * (weights + kv) / (chip.hbm_bandwidth * shares.hbm),
                      gather_seconds=gather_s, flops_seconds=flops_seconds(decode_flops, layout, shares))


def flops_seconds(flops: int, layout: SliceLayout, shares: Shares) -> float:
    """Seconds of `flops` spread over the slice's chips at the MFU share of their peak."""
    return flops / (layout.chips * layout.chip.peak_flops * shares.mfu)


@dataclasses.dataclass(frozen=True)
class StepTime:
    """Estimated seconds of one recipe step by phase, and the FLOPs behind them."""

    decode: DecodeTime
    prefill_seconds: float
    logprob_seconds: float
    update_seconds: float  # forward + backward, and the remat recompute
    flops: PhaseFlops

    @property
    def seconds(self) -> float:
        return self.decode.seconds + self.prefill_seconds + self.logprob_seconds + self.update_seconds


def step_time(model, recipe: Recipe, lengths: Lengths, layout: SliceLayout, shares: Shares = Shares()) -> StepTime:
    """The time of one step of `recipe` with every sequence at `lengths`, for `model` laid out as `layout`."""
    flops = phase_flops(model, recipe, lengths, layout.remat)
    return StepTime(decode=decode_time(model, recipe, lengths, layout, shares, flops.decode),
                    prefill_seconds=flops_seconds(flops.prefill, layout, shares),
                    logprob_seconds=flops_seconds(flops.logprob, layout, shares),
                    update_seconds=flops_seconds(flops.update + flops.remat, layout, shares), flops=flops)


def run_chip_hours(step_seconds: float, chips: int, steps: int) -> float:
    """Chip-hours of a run: step seconds x chips x steps / 3600."""
    return step_seconds * chips * steps / 3600


def paper_flops_per_chip_second(step: StepTime, chips: int) -> float:
    """The ledger's C (6 N T, FLOPs) a chip-second buys: C of a step / (step seconds x chips)."""
    return step.flops.c_paper / (step.seconds * chips)


def chip_hours_to_flops(chip_hours: float, flops_per_chip_second: float) -> float:
    """A budget in chip-hours as FLOPs of C: chip_hours x 3600 x (C per chip-second)."""
    if not math.isfinite(chip_hours) or chip_hours <= 0:
        raise ValueError(f"a chip-hour budget must be positive and finite, got {chip_hours}")
    return chip_hours * 3600 * flops_per_chip_second

