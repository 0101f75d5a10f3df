"""The memory plan as a table: per-row peaks and verdicts from compiled (or estimated) bytes, and the
markdown page `tools/memory_plan.py` writes (docs/memory_plan.md).

A row is the dict `tools/memory_plan.plan_row` builds: the slice (`hbm_bytes`, `degrees`, ...), the analytic
`estimate` (common.aot.estimate, as a dict), and the compiled `update` / `sampler` results
(common.aot.compiled: a CompiledMemory dict, or {"refused": ...} when the compiler said it cannot fit).
"""

from __future__ import annotations

import math


def row_total(part: dict | None) -> int | None:
    """The compiled per-device total (None when not compiled or refused)."""
    if not part or "refused" in part:
        return None
    return part["arguments"] + part["outputs"] - part["alias"] + part["temporaries"] + part["generated_code"]


def _compiled_peak(part: dict, outside: int) -> float:
    """A compiled program's per-device peak plus what stays resident outside it; a refused program's
    is what the compiler said it needed (infinite when it did not say)."""
    if "refused" in part:
        return part["refused"]["required_temporaries"] or math.inf
    return row_total(part) + outside


def peaks(row: dict) -> tuple[float, float]:
    """(training peak, sampling peak) per device: compiled totals where there are some, plus what stays
    resident outside the program (the reference copy during the update; optimiser state and reference
    during sampling), else the analytic estimate (sampling: one sampler call of the trainer's size)."""
    e = row["estimate"]
    train = _compiled_peak(row["update"], e["reference"]) if row["update"] else e["train_peak"]
    if row["sampler"]:
        sample = _compiled_peak(row["sampler"], e["optimizer"] + e["reference"])
    elif "sample_peak_per_call" in e:
        sample = e["sample_peak_per_call"]
    elif row["rollout_chunk"]:  # a row cached before the estimate per call was recorded
        sample = e["resident"] + (e["sample_peak"] - e["resident"]) * row["rollout_chunk"] / row["rollout_batch"]
    else:
        sample = math.inf
    return train, sample


def engine_peak(row: dict) -> float | None:
    """The rollout engine's peak per device: its compiled decode step (inference copy of the weights + page pool
    + scratch) plus the trainer's state held beside it (parameters, optimiser state, reference copy), else the
    analytic copy + pool + that state; None when the trainer uses no engine there (or the row predates it)."""
    e, plan = row["estimate"], row.get("engine_plan")
    if not plan:
        return None
    outside = e["params"] + e["optimizer"] + e["reference"]
    if row.get("engine"):
        return _compiled_peak(row["engine"], outside)
    return plan["copy_bytes"] + plan["pool_bytes"] + outside


def sampler_batch(row: dict) -> int:
    return row["sampler"]["batch"] if row["sampler"] else row["rollout_chunk"]


def verdict(row: dict, headroom: float) -> str:
    """"fits", "fits, rollouts in calls of N" (the trainer's sequences per sampler call, `rollout_chunk`, below
    the step's), or "DOES NOT FIT" (also when the compiled sampler fits only below the trainer's number: the
    text then names the grpo.rollout_batch that does)."""
    budget = row["hbm_bytes"] * headroom
    train, sample = peaks(row)
    if train > budget or sample > budget:
        return "DOES NOT FIT"
    if sampler_batch(row) < row["rollout_chunk"]:
        return (f"DOES NOT FIT at the trainer's {row['rollout_chunk']} sequences per sampler call; "
                f"grpo.rollout_batch={sampler_batch(row)} does")
    calls = f"rollouts in calls of {row['rollout_chunk']}" if row["rollout_chunk"] < row["rollout_batch"] else ""
    static = "grpo.rollout_engine='static'" + (f" ({calls})" if calls else "")
    engine, compiled = engine_peak(row), row.get("engine")
    if engine is not None and engine > budget:
        return f"DOES NOT FIT with the rollout engine; {static} fits"
    if compiled and compiled["sequences_per_call"] < row["rollout_chunk"]:
        return (f"DOES NOT FIT with the rollout engine at the trainer's {row['rollout_chunk']} sequences per call; "
                f"grpo.rollout_batch={compiled['sequences_per_call']} does, or {static}")
    return "fits" + (f", {calls}" if calls else "")


def gib_text(n) -> str:
    if n is None:
        return "-"
    return "inf" if n == math.inf else f"{n / 2**30:.1f}"


def _program_md(part: dict | None, detail: bool) -> tuple[str, str]:
    """(bytes cell, compile-seconds cell) of one program."""
    if part is None:
        return "-", "-"
    seconds = f"{part['compile_seconds']:.0f}"
    if "refused" in part:
        return f"refused: needs {gib_text(part['refused']['required_temporaries'])} temp", seconds
    if not detail:
        return f"**{gib_text(row_total(part))}**", seconds
    return (f"{gib_text(part['arguments'])} / {gib_text(part['temporaries'])} / {gib_text(part['outputs'] - part['alias'])} / "
            f"**{gib_text(row_total(part))}**"), seconds


def _engine_md(r: dict) -> tuple[str, str]:
    """(engine cell, compile-seconds cell): sequences per call, the step's rows x pages (or the slots), the pool's
    pages, compiled total (or -), analytic copy / pool; of the compiled engine, else of the trainer's."""
    if not r.get("engine_plan"):
        return "static sampler", "-"
    compiled, seconds = _program_md(r.get("engine"), False)
    plan = r.get("engine") or r["engine_plan"] | {"sequences_per_call": r["rollout_chunk"]}
    slots = f"{plan['slots']} slot{'s' if plan['slots'] != 1 else ''}"
    shape = f"{plan['rows']} x {plan['pages_per_row']}" if "rows" in plan else slots
    return (f"{plan['sequences_per_call']}: {shape}, {plan['num_pages']} pages: {compiled} "
            f"({gib_text(plan['copy_bytes'])} / {gib_text(plan['pool_bytes'])})"), seconds


def _row_md(r: dict, headroom: float) -> str:
    e = r["estimate"]
    train, sample = peaks(r)
    update, update_s = _program_md(r["update"], True)
    sampler, sampler_s = _program_md(r["sampler"], False)
    engine, engine_s = _engine_md(r)
    if r["update"] is None:
        update = f"est. {gib_text(e['train_peak'])}"
    engine_peak_text = "" if engine_peak(r) is None else f" / {gib_text(engine_peak(r))}"
    cells = [r["size"], r["preset"], f"{r['devices']} x {r['hbm_bytes'] / 2**30:.0f}", "/".join(map(str, r["degrees"])),
             f"{r['micro_batch']} ({r['per_device_micro_batch']}), {'on' if r['remat'] else 'off'}", update, update_s,
             f"{sampler_batch(r)}: {sampler}", sampler_s, engine, engine_s,
             f"{gib_text(e['params'])} / {gib_text(e['optimizer'])} / {gib_text(e['gradients'])} / {gib_text(e['kv_cache'])}",
             f"{gib_text(train)} / {gib_text(sample)}{engine_peak_text}", f"{verdict(r, headroom)} ({r['status']})"]
    return "| " + " | ".join(cells) + " |"


def estimator_error(rows: list[dict]) -> dict[str, list[tuple[str, float]]]:
    """{"update": [(row name, analytic / compiled)], "sampler": [...]} over the rows with compiled programs:
    the analytic training peak against the compiled update's (each with the reference copy beside it), the
    analytic sampling peak of one call against the compiled sampler's (with what stays resident beside it)."""
    out = {"update": [], "sampler": []}
    for r in rows:
        e, name = r["estimate"], f"{r['size']} on {r['preset']}"
        train, sample = peaks(r)
        if r["update"] and "refused" not in r["update"]:
            out["update"].append((name, e["train_peak"] / train))
        if r["sampler"] and "refused" not in r["sampler"] and "sample_peak_per_call" in e:
            out["sampler"].append((name, e["sample_peak_per_call"] / sample))
    return out


def estimator_error_md(rows: list[dict]) -> list[str]:
    """The analytic estimate's error against the compiled rows, as the page states it (rows without a
    compile — GPU presets on a host without a GPU — rely on the estimate alone)."""
    errors = estimator_error(rows)
    if not errors["update"] and not errors["sampler"]:
        return []
    lines = ["", "The analytic estimate (`common.aot.estimate`, what rows without a compile rely on) against the "
             "compiled rows above, as analytic / compiled:", ""]
    for kind, what in (("update", "training peak"), ("sampler", "sampling peak of one sampler call")):
        if errors[kind]:
            ratios = [x for _, x in errors[kind]]
            lines.append(f"- {what}: {min(ratios):.2f}x to {max(ratios):.2f}x (" +
                         ", ".join(f"{n} {x:.2f}x" for n, x in errors[kind]) + ")")
    return lines


def markdown(rows: list[dict], command: str, headroom: float, recipe: str, libtpu: str | None) -> str:
    """The whole page: title, the command that made it, what was planned (`recipe`), columns, table, notes."""
    lines = [
        "# Memory plan: GRPO on Qwen2.5, per device, compiled ahead of time",
        "",
        "Generated (do not edit by hand) by",
        "",
        "```bash",
        command,
        "```",
        "",
        recipe,
        f"TPU programs are compiled for the real chips by libtpu {libtpu or '(not installed)'} through "
        "`jax.experimental.topologies` on a CPU host: nothing ran, no TPU memory was used. GPU presets "
        "compile only on a GPU host; without one their rows are analytic.",
        "",
        "Columns, GiB per device:",
        "",
        "- **update** = `compiled.memory_analysis()` of the GRPO update step (`make_update_fn`): arguments "
        "(parameters + optimiser state + batch) / temporaries (activations, gradients, scratch) / outputs "
        "not aliased to a donated input (the step donates parameters and optimiser state; programs compiled "
        "before it did hold a second copy here) / total.",
        "- **sampler** = compiled total of the prefill + decode program (`common.sampler.prefill_and_decode`) at "
        "the sampler batch shown: parameters + KV cache + scratch. The batch is the trainer's sequences per "
        "sampler call on that slice (`rl_scaling.grpo.setup.sequences_per_call`, which the trainer calls at "
        "start with its device's memory; here with the slice's HBM); when that does not compile to fit, it is "
        "halved until one does and the verdict names the `grpo.rollout_batch` to set.",
        "- **engine** = compiled total of the rollout engine's largest decode step "
        "(`common.engine.programs.step_function`, `common.aot.engine.compile_largest_decode_step`), which GRPO "
        "runs instead of the sampler on an accelerator (`grpo.rollout_engine` auto; `static sampler` where it "
        "runs the sampler): rows x pages listed per row (rows over all batch shards), the pages of one batch "
        "shard's pool, then the total (the bfloat16 inference copy of the weights + the shard's page pool + "
        "scratch) and, in brackets, the analytic copy / pool. The engine is the one the trainer builds there "
        "(`rl_scaling.grpo.setup.make_rollout`, built on an abstract model: one pool per batch shard holding that "
        "chip's share of the sampler's sequences per call at full length, `grpo.engine_slots` or as many slots "
        "over all shards); when it does not compile to fit, the engine of half as many sequences per call is "
        "compiled until one does (`grpo.rollout_batch`, named in the verdict). Each chip holds its batch shard's "
        "pool, split over kv heads by tensor. Rows without a compile: the trainer's slots and pool, and an "
        "engine peak of copy + pool without scratch.",
        "- **analytic** = parameters / optimiser state / gradients (accumulated + one micro-batch's) / KV "
        "cache at the configured rollout batch, from the rules table (`common.aot.estimate`).",
        "- **peaks** = training (update total + reference copy) / sampling (sampler total + optimiser state + "
        "reference copy) / engine (engine total + parameters + optimiser state + reference copy, the trainer's "
        f"state held while it generates). A row fits when all stay under {headroom:.0%} of HBM.",
        "",
        "| size | slice | chips x GiB | mesh data/fsdp/tensor | micro-batch (per device), remat | "
        "update args / temp / out / **total** | compile s | sampler batch: **total** | compile s | "
        "engine rows x pages, pool: **total** (copy / pool) | compile s | "
        "analytic params / opt / grads / KV | peaks train / sample / engine | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row_md(r, headroom) for r in rows]
    tried = [(r["size"], r["preset"], f"update micro-batch {t['micro_batch']}, remat {'on' if t['remat'] else 'off'}", t)
             for r in rows for t in r.get("tried", [])[:-1]]
    tried += [(r["size"], r["preset"], f"sampler batch {t['batch']}", t)
              for r in rows for t in r.get("sampler_tried", [])[:-1]]
    tried += [(r["size"], r["preset"], f"engine at {t['batch']} sequences per call", t)
              for r in rows for t in r.get("engine_tried", [])[:-1]]
    if tried:
        lines += ["", "Tried before the choice in the table (over budget, or refused by the compiler):", ""]
        lines += [f"- {s} on {p}, {what}: " + (f"refused, temporaries need {gib_text(t['refused']['required_temporaries'])} GiB"
                                                if t.get("refused") else f"{gib_text(t['total'])} GiB")
                  for s, p, what, t in tried]
    commits = {}
    for r in rows:
        for kind in ("update", "sampler", "engine"):
            if r.get(kind):
                commits.setdefault(r[kind].get("code_commit") or "not recorded (before 279922b)", []).append(
                    f"{r['size']} {kind}")
    if commits:
        lines += ["", "Code each compiled program came from (results are cached per program and reused: a program "
                  "under an older commit was not rerun for this page; `--fresh` recompiles):",
                  ""] + [f"- {c}: {', '.join(what)}" for c, what in commits.items()]
        if any(c.startswith("not recorded") for c in commits):
            lines += ["", "279922b changed the KV cache layout to [batch, kv heads, slots, head dim] and the attention "
                      "around it; programs compiled before it moved the same bytes through a different layout."]
    lines += estimator_error_md(rows)
    notes = [(r["size"], r["preset"], n) for r in rows for n in r["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {s} on {p}: {n}" for s, p, n in notes]
    lines += ["", "`python tools/memory_plan.py --check --sizes <size> --presets <slice>` exits 1 on a row that "
              "does not fit and prints what to change (more chips, more fsdp, remat, a smaller micro-batch, "
              "fewer sequences per sampler call)."]
    return "\n".join(lines) + "\n"
