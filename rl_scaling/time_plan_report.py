"""The paper's recipe on the mesh presets, timed by `rl_scaling.time_plan`: rows, the markdown of
docs/time_plan.md (`tools/time_plan.py`), and a chip-hour budget as FLOPs of C (`tools/plan_size.py`)."""

from __future__ import annotations

import dataclasses

from rl_scaling.time_plan import (PAGE, Lengths, Recipe, Shares, SliceLayout, StepTime, chip_hours_to_flops,
                                  chip_of, paper_flops_per_chip_second, run_chip_hours, step_time)

# The paper's run: ~54k problems at 512 prompts a step, one epoch (../shared/spec/rl_scaling.md).
RUN_STEPS = 105
# An assumption, not a number from the paper (its spec gives no mean lengths): a math problem with the
# step-by-step instruction and chat template, and a mean chain of thought, in tokens.
MEAN_LENGTHS = Lengths(prompt=256, response=1024)
SCENARIOS = ("max", "mean")


@dataclasses.dataclass(frozen=True)
class SlicePlan:
    """The paper's recipe for a Qwen2.5 size on a mesh preset: the recipe, the layout, the recipe's maximum
    lengths, and `memory`: "" unless the sampler cannot hold even one sequence per batch shard (then why)."""

    size: str
    recipe: Recipe
    layout: SliceLayout
    max_lengths: Lengths
    memory: str


def plan_on_slice(size: str, preset_name: str, steps: int = RUN_STEPS) -> SlicePlan:
    """`size` (a `common.mesh_presets.SIZES` name) on `preset_name` as the trainer would run the paper's
    recipe there: the preset's layout (`common.mesh_presets.layout`) and the sequences per sampler call the
    trainer computes from the slice's HBM (`rl_scaling.grpo.setup.sequences_per_call`). Whether the update
    fits is the memory plan's question (docs/memory_plan.md); this says only when the rollouts cannot fit
    (`common.aot.fits.rollout_chunk` finds no chunk)."""
    from common.aot.fits import rollout_chunk
    from common.config import get_preset
    from common.mesh_presets import SIZES, get_mesh_preset, layout
    from rl_scaling.grpo.defaults import paper_recipe
    from rl_scaling.grpo.setup import job_shape, sequences_per_call

    if size not in SIZES:
        raise KeyError(f"unknown size {size!r}; known: {list(SIZES)}")
    preset = get_mesh_preset(preset_name)
    chip = chip_of(preset)
    plan = layout(preset, size)
    cfg = paper_recipe(size)
    cfg.grpo.micro_batch_per_device, cfg.model.remat = plan.per_device_micro_batch, plan.remat
    model, degrees = get_preset(size), (plan.data, plan.fsdp, plan.tensor)
    in_flight, _ = sequences_per_call(cfg, model, degrees, preset.hbm_bytes)
    memory = "" if rollout_chunk(model, degrees, job_shape(cfg, None, degrees), preset.hbm_bytes) else (
        f"does not fit: parameters, optimiser state and reference leave no room for one sequence per batch "
        f"shard in {preset.hbm_bytes / 2**30:.0f} GiB per chip (docs/memory_plan.md)")
    return SlicePlan(size=size, recipe=Recipe.from_config(cfg, steps),
                     layout=SliceLayout(preset=preset.name, chip=chip, chips=preset.num_devices, data=plan.data,
                                        fsdp=plan.fsdp, tensor=plan.tensor, remat=plan.remat, in_flight=in_flight),
                     max_lengths=Lengths(int(cfg.data.max_prompt_len), int(cfg.grpo.max_response_len)),
                     memory=memory)


def scenario_lengths(plan: SlicePlan, scenario: str, mean: Lengths = MEAN_LENGTHS) -> Lengths:
    """"max": the recipe's longest prompt and response for every sequence; "mean": `mean`."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown lengths {scenario!r}; known: {SCENARIOS}")
    return plan.max_lengths if scenario == "max" else mean


def time_on_slice(plan: SlicePlan, lengths: Lengths, shares: Shares = Shares()) -> StepTime:
    from common.config import get_preset

    return step_time(get_preset(plan.size), plan.recipe, lengths, plan.layout, shares)


def default_presets(size: str) -> list[str]:
    """The size's recommended slice, then every GPU preset."""
    from common.mesh_presets import PRESETS, RECOMMENDED

    return [RECOMMENDED[size]] + [p.name for p in PRESETS.values() if p.platform == "gpu"]


def _row(plan: SlicePlan, step: StepTime | None) -> str:
    lay = plan.layout
    head = (f"| {plan.size} | {lay.preset} | {lay.chips} | {lay.data}/{lay.fsdp}/{lay.tensor}"
            f"{', remat' if lay.remat else ''}")
    if step is None:
        return head + f" | — | — | — | — | — | — | — | {plan.memory} |"
    d = step.decode
    rate = paper_flops_per_chip_second(step, lay.chips)
    return (head + f" | {lay.in_flight} x {d.calls} | {d.seconds:,.0f} ({d.bound}) | {step.prefill_seconds + step.logprob_seconds:,.0f}"
            f" | {step.update_seconds:,.0f} | **{step.seconds:,.0f}** | "
            f"{run_chip_hours(step.seconds, lay.chips, plan.recipe.steps):,.0f} | {rate / 1e12:.1f} | |")


def markdown_table(plans: list[SlicePlan], lengths_of, shares: Shares) -> str:
    """One table: a row per plan, timed at `lengths_of(plan)`."""
    lines = ["| size | slice | chips | mesh data/fsdp/tensor | sequences in flight x calls | decode s (bound) | "
             "prefill + log-prob s | update s | **step s** | run chip-hours | C TFLOP/s per chip | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for plan in plans:
        lines.append(_row(plan, None if plan.memory else time_on_slice(plan, lengths_of(plan), shares)))
    return "\n".join(lines)


def assumptions(shares: Shares, mean: Lengths, steps: int, recipe: Recipe, max_lengths: Lengths) -> list[str]:
    """The model and its numbers, as markdown bullets."""
    from rl_scaling.time_plan import CHIPS

    chips = "; ".join(f"{c.name} {c.peak_flops / 1e12:.0f} TFLOP/s, HBM {c.hbm_bandwidth / 1e9:,.0f} GB/s, "
                      f"interconnect {'n/a' if c.ici_bandwidth is None else f'{c.ici_bandwidth / 1e9:.0f} GB/s'}"
                      for c in CHIPS.values())
    return [
        f"- A step: {recipe.prompts_per_step} prompts x {recipe.group_size} samples = {recipe.sequences} sequences; "
        f"rollout (prefill + decode), old-policy and reference log-prob forwards, one pass of forward + backward "
        f"(with remat one more forward). A run: {steps} steps (~54k problems, one epoch); chip-hours = step s x "
        f"chips x steps / 3600. Whether a row's update fits is the memory plan's answer (docs/memory_plan.md); "
        f"a row here says only when the rollouts cannot fit.",
        f"- Lengths: every sequence at the recipe's maximum ({max_lengths.prompt} prompt + {max_lengths.response} "
        f"response tokens), or at assumed means ({mean.prompt} + {mean.response}; the spec gives no mean "
        f"length). All sequences of a step have the same lengths here, so continuous batching gains nothing "
        f"from a long tail in these tables (tools/bench_rollouts.py measures that gain).",
        f"- Decode, with the rollout engine (`common.engine`, what the trainer runs on every accelerator): per "
        f"decode step each chip reads its tensor share of the bfloat16 inference copy of the weights (whole "
        f"on the chip: nothing is gathered) and the live pages of the sequences its batch shard holds (prompt, "
        f"the response so far, {PAGE}-token pages: on average over a response the prompt and half the "
        f"response), at {shares.hbm:.0%} of HBM bandwidth; when slower, the decode FLOPs (bound in brackets). "
        f"Sequences in flight: the trainer's own number for the slice's HBM "
        f"(`rl_scaling.grpo.setup.sequences_per_call`), which the engine's per-shard pools hold at full length. "
        f"The last table sets the bytes against the static sampler's (`grpo.rollout_engine='static'`): the "
        f"same weights gathered over fsdp every decode step ({shares.ici:.0%} of the interconnect, one way) "
        f"and every allocated cache slot (prompt + response) read.",
        f"- Prefill, log-probs, update: FLOPs of `rl_scaling.accounting.step_compute` (the ledger: 2N per token "
        f"and pass, 6N for training, causal attention, LM head on response tokens) at {shares.mfu:.0%} of the "
        f"slice's peak bf16 FLOP/s (MFU). Not counted: optimiser arithmetic, gradient reductions, grading, "
        f"padding, compiles.",
        "- C TFLOP/s per chip: the ledger's C (6 N T, what the scaling law is fitted in) per chip-second; "
        "`tools/plan_size.py --x chip-hours` converts a chip-hour budget to C with it.",
        f"- Chips (peak bf16, HBM bandwidth, interconnect one way; sources in `rl_scaling/time_plan.py`): {chips}.",
    ]


def document(sizes: list[str], presets_of, shares: Shares = Shares(), mean: Lengths = MEAN_LENGTHS,
             steps: int = RUN_STEPS, command: str = "python tools/time_plan.py") -> str:
    """docs/time_plan.md: assumptions, then a table at the maximum lengths and one at the mean lengths.
    `presets_of(size)` lists the presets to time a size on."""
    plans = [plan_on_slice(size, preset, steps) for size in sizes for preset in presets_of(size)]
    if not plans:
        raise ValueError("no (size, slice) pairs to plan")
    first = plans[0]
    parts = ["# Time plan: one step of the RL scaling recipe, per Qwen2.5 size and slice", "",
             "Generated (do not edit by hand) by", "", "```bash", command, "```", "",
             "Estimated, not measured: a roofline beside the [memory plan](memory_plan.md) "
             "(`rl_scaling/time_plan.py`).", "",
             *assumptions(shares, mean, steps, first.recipe, first.max_lengths), "",
             f"## At the recipe's maximum lengths ({first.max_lengths.prompt} + {first.max_lengths.response} tokens)",
             "", markdown_table(plans, lambda p: p.max_lengths, shares), "",
             f"## At mean lengths ({mean.prompt} + {mean.response} tokens)", "",
             markdown_table(plans, lambda p: mean, shares), "",
             "## Bytes a chip moves per decode step: the engine against the static sampler", "",
             "At the recipe's maximum lengths, on average over a response; GB per chip. HBM: weights + KV read; "
             "ICI: weights received by the fsdp gather. Decode s: the step's rollout decode at the bound.", "",
             bytes_table([p for p in plans if not p.memory], lambda p: p.max_lengths, shares), ""]
    return "\n".join(parts)


def bytes_table(plans: list[SlicePlan], lengths_of, shares: Shares) -> str:
    """Per plan: per-chip bytes of a decode step and the step's decode seconds, engine and static sampler."""
    lines = ["| size | slice | sequences a chip | engine weights + live KV = HBM GB | engine decode s (bound) | "
             "static weights + KV = HBM GB, ICI GB | static decode s (bound) | static / engine s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for plan in plans:
        runs = {r: time_on_slice(dataclasses.replace(plan, layout=plan.layout.replace(rollout=r)), lengths_of(plan),
                                 shares).decode for r in ("engine", "static")}
        e, st = runs["engine"], runs["static"]
        gb = lambda n: f"{n / 1e9:.1f}"
        lines.append(f"| {plan.size} | {plan.layout.preset} | {e.sequences_per_chip} | {gb(e.weight_bytes)} + "
                     f"{gb(e.kv_bytes)} = {gb(e.weight_bytes + e.kv_bytes)} | {e.seconds:,.0f} ({e.bound}) | "
                     f"{gb(st.weight_bytes)} + {gb(st.kv_bytes)} = {gb(st.weight_bytes + st.kv_bytes)}, "
                     f"{gb(st.gather_bytes)} | {st.seconds:,.0f} ({st.bound}) | {st.seconds / e.seconds:.2f}x |")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ChipHourBudget:
    """A chip-hour budget for one size as FLOPs of C, and how it was converted."""

    size: str
    preset: str
    chip_hours: float
    flops_per_chip_second: float
    flops: float

    def describe(self) -> str:
        return (f"{self.size} on {self.preset}: {self.chip_hours:g} chip-hours x 3600 s x "
                f"{self.flops_per_chip_second:.4g} FLOP/s of C per chip = C {self.flops:.4g} FLOPs")


def chip_hour_budget(size: str, preset: str | None, chip_hours: float, scenario: str = "mean",
                     shares: Shares = Shares(), mean: Lengths = MEAN_LENGTHS) -> ChipHourBudget:
    """`chip_hours` as C for `size` on `preset` (None: the size's recommended slice), through the time
    plan's C per chip-second at the scenario's lengths."""
    from common.mesh_presets import RECOMMENDED

    plan = plan_on_slice(size, preset or RECOMMENDED[size])
    if plan.memory:
        raise ValueError(f"{size} on {plan.layout.preset}: {plan.memory}")
    step = time_on_slice(plan, scenario_lengths(plan, scenario, mean), shares)
    rate = paper_flops_per_chip_second(step, plan.layout.chips)
    return ChipHourBudget(size, plan.layout.preset, chip_hours, rate, chip_hours_to_flops(chip_hours, rate))


def qwen_size_for(n: float, tolerance: float = 0.1) -> str:
    """The Qwen2.5 size whose non-embedding parameter count (the ledger's N) or nominal size ("7b": 7e9) is
    within `tolerance` of `n`."""
    from common.config import get_preset
    from common.mesh_presets import SIZES
    from rl_scaling.accounting import non_embedding_params

    for size in SIZES:
        nominal = float(size.removeprefix("qwen2_5_").removesuffix("b").replace("_", ".")) * 1e9
        if any(abs(n - ref) <= tolerance * ref for ref in (non_embedding_params(get_preset(size)), nominal)):
            return size
    raise ValueError(f"size {n:.4g} is no Qwen2.5 size (non-embedding or nominal parameters): a chip-hour "
                     f"budget needs the time of a step, known only for {list(SIZES)}")
