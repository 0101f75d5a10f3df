"""Ahead-of-time memory plan: compile the GRPO update step and the sampler for a slice, without running.

    python tools/memory_plan.py                           # every Qwen2.5 size on its recommended slice
    python tools/memory_plan.py --sizes qwen2_5_7b --presets v5p-64,v5e-64
    python tools/memory_plan.py --check --sizes qwen2_5_72b --presets v5e-64   # exit 1 if it cannot fit

For each (size, slice): the mesh degrees from configs/mesh_presets.py, the micro-batch and remat chosen so
that the update fits (the analytic estimate picks the candidate, the compiler confirms it), then
`jit(make_update_fn(...)).lower(<ShapeDtypeStructs with shardings>).compile()` for the slice's real chips
(TPU: libtpu topologies on this CPU host; GPU presets compile only on such a host, otherwise analytic
only), and the same for the sampler's prefill + decode at the configured rollout batch. Results per row
are cached as JSON (--cache-dir), so an interrupted run resumes; the markdown table goes to --out.
Run with JAX_PLATFORMS=cpu on a machine without accelerators.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.aot.topology import prepare_libtpu_env  # noqa: E402  (no JAX import)

prepare_libtpu_env()

import ml_collections  # noqa: E402

from common.aot.estimate import JobShape, estimate_memory  # noqa: E402
from common.aot.fits import (DEFAULT_HEADROOM, MemoryPlanError, check_fits,  # noqa: E402
                             largest_fitting_rollout_batch)
from configs.mesh_presets import RECOMMENDED, SIZES, get_mesh_preset  # noqa: E402

DEFAULT_CONFIG = "configs/grpo/base.py"
DEFAULT_OUT = "docs/memory_plan.md"
DEFAULT_CACHE = "artifacts/memory_plan"
PER_DEVICE_MICRO_BATCHES = (2, 1)
NO_REMAT_MARGIN = 0.6


def load_grpo_config(path: str | Path) -> ml_collections.ConfigDict:
    """`get_config()` of a GRPO config file (configs/grpo/*.py)."""
    import importlib.util

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no GRPO config file at {path}")
    spec = importlib.util.spec_from_file_location(f"_memory_plan_cfg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def plan_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config as a pod run uses it: bfloat16 compute, float32 parameters (unless the file says
    otherwise for the parameters)."""
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.model.dtype = "bfloat16"
    return cfg


def micro_batch_candidates(cfg, degrees: tuple[int, int, int]) -> list[tuple[int, bool]]:
    """(micro_batch, remat) candidates, best first: no remat before remat, bigger micro-batches first;
    a micro-batch is a multiple of data x fsdp (one shard per device) that divides the mini-batch."""
    data, fsdp, _ = degrees
    mini = cfg.grpo.mini_batch_prompts * cfg.grpo.group_size
    out = []
    for remat in (False, True):
        for b in PER_DEVICE_MICRO_BATCHES:
            m = b * data * fsdp
            if mini % m == 0:
                out.append((m, remat))
    if not out:
        raise ValueError(f"a mini-batch of {mini} sequences cannot be split over data x fsdp = {data * fsdp}")
    return out


def job_candidates(cfg, model, degrees, base: JobShape, budget: float) -> list[JobShape]:
    """Candidate shapes to compile, best first: no remat at one sequence per device when the estimate leaves a
    wide margin, then remat at 2 and at 1 sequences per device. The estimate is rough about activations (see
    common.aot.estimate), so it only decides whether no-remat is worth a compile; the compiler decides the rest."""
    out = []
    no_remat = [base.replace(micro_batch=m, remat=False) for m, r in micro_batch_candidates(cfg, degrees) if not r]
    if no_remat and estimate_memory(model, degrees, no_remat[-1]).train_peak <= NO_REMAT_MARGIN * budget:
        out.append(no_remat[-1])
    return out + [base.replace(micro_batch=m, remat=True) for m, r in micro_batch_candidates(cfg, degrees) if r]


def compile_update(model, mesh, shape: JobShape, cfg):
    """CompiledMemory of the GRPO update step (make_update_fn, the trainer's optimiser and loss)."""
    import jax.numpy as jnp

    from common.aot.abstract import abstract_array, abstract_model_state, abstract_optimizer_state
    from common.aot.compiled import compiled_memory
    from rl_scaling.grpo.train_step import LossConfig, make_optimizer, make_update_fn

    g, o = cfg.grpo, cfg.optim
    graphdef, params = abstract_model_state(model, mesh, dtype=shape.dtype, param_dtype=shape.param_dtype)
    optimizer = make_optimizer(o.lr, o.weight_decay, o.grad_clip, b1=o.b1, b2=o.b2)
    opt_state = abstract_optimizer_state(optimizer, params)
    mini = g.mini_batch_prompts * g.group_size
    M, m, R, T = mini // shape.micro_batch, shape.micro_batch, shape.response_len, shape.seq_len
    seq = lambda *rest: abstract_array(mesh, (M, m, *rest), jnp.float32, (None, "batch") + (None,) * len(rest))
    batch = {"tokens": abstract_array(mesh, (M, m, T), jnp.int32, (None, "batch", None)),
             "start": abstract_array(mesh, (M, m), jnp.int32, (None, "batch")),
             "targets": abstract_array(mesh, (M, m, R), jnp.int32, (None, "batch", None)),
             "mask": seq(R), "advantages": seq(), "old_logp": seq(R)}
    if shape.frozen_copies:
        batch["ref_logp"] = seq(R)
    loss_cfg = LossConfig(eps_low=g.eps_low, eps_high=g.eps_high, kl_coef=g.kl_coef, kl_estimator=g.kl_estimator,
                          aggregation=g.aggregation, max_response_len=R, temperature=g.temperature)
    update_fn = make_update_fn(graphdef, optimizer, loss_cfg, shape.remat)
    return compiled_memory(update_fn, params, opt_state, batch, mesh=mesh)


def compile_sampler(model, mesh, shape: JobShape, batch: int):
    """CompiledMemory of the sampler's prefill + decode for `batch` sequences."""
    from common.aot.abstract import abstract_model_state
    from common.aot.compiled import compiled_memory
    from common.aot.sampler import abstract_decode_inputs, decode_program

    graphdef, params = abstract_model_state(model, mesh, dtype=shape.dtype, param_dtype=shape.param_dtype)
    program = decode_program(graphdef, cache_length=shape.cache_length)
    return compiled_memory(program, params, *abstract_decode_inputs(mesh, batch, shape.prompt_len), mesh=mesh)


EXTRAPOLATION_DEPTHS = (2, 4)


class ProgramCache:
    """Results of single compiles, one JSON file each, so an interrupted plan resumes where it stopped."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    def get_or_compile(self, key: str, compile_fn) -> dict:
        path = self.directory / f"{key}.json" if self.directory else None
        if path is not None and path.exists():
            return json.loads(path.read_text())
        result = compile_fn()
        if path is not None:
            path.write_text(json.dumps(result, indent=2))
        return result


def measured(compile_fn) -> dict:
    """CompiledMemory as a dict, or {"refused": {...}} when the compiler says it cannot fit the device."""
    from common.aot.compiled import compile_refusal

    start = time.perf_counter()
    try:
        return dataclasses.asdict(compile_fn())
    except Exception as err:
        refusal = compile_refusal(err)
        if refusal is None:
            raise
        return {"refused": refusal, "compile_seconds": time.perf_counter() - start}


def at_depth(model, depth: str, compile_for_model) -> dict:
    """Compile at the model's full depth, or ("extrapolate") at 2 and 4 layers and extend every byte count
    linearly to the full depth (layers are identical, so each count is affine in their number)."""
    if depth == "full":
        return measured(lambda: compile_for_model(model))
    lo, hi = (measured(lambda n=n: compile_for_model(model.replace(num_layers=n))) for n in EXTRAPOLATION_DEPTHS)
    seconds = lo["compile_seconds"] + hi["compile_seconds"]
    if "refused" in lo or "refused" in hi:
        return {"refused": (lo if "refused" in lo else hi)["refused"], "compile_seconds": seconds,
                "depth": list(EXTRAPOLATION_DEPTHS)}
    d0, d1 = EXTRAPOLATION_DEPTHS
    out = {k: int(round(lo[k] + (hi[k] - lo[k]) * (model.num_layers - d0) / (d1 - d0)))
           for k in ("arguments", "outputs", "temporaries", "alias", "generated_code")}
    return out | {"compile_seconds": seconds, "depth": list(EXTRAPOLATION_DEPTHS)}


def fits_budget(result: dict, budget: float, resident_outside: int = 0) -> bool:
    return "refused" not in result and row_total(result) + resident_outside <= budget


def plan_row(size: str, preset_name: str, cfg, *, prompt_len: int, headroom: float, compile_programs: bool,
             sampler: bool, degrees: tuple[int, int, int] | None = None, depth: str = "full",
             cache: ProgramCache | None = None, max_update_compiles: int = 2, max_sampler_compiles: int = 3) -> dict:
    """One row of the plan as a JSON-able dict. `degrees` default to the preset's layout for `size`.

    The update: candidates best first (job_candidates), compiled until one fits; the sampler: the largest
    rollout batch the estimate allows, halved while the compiler refuses it or it does not fit."""
    from common.config import get_preset
    from rl_scaling.grpo.setup import job_shape

    cache = cache or ProgramCache(None)
    preset = get_mesh_preset(preset_name)
    model = get_preset(size)
    degrees = tuple(degrees or preset.degrees(size))
    budget = preset.hbm_bytes * headroom
    candidates = job_candidates(cfg, model, degrees, job_shape(cfg, prompt_len), budget)
    shape = candidates[0]
    chunk = largest_fitting_rollout_batch(model, degrees, shape, budget)
    row = {"size": size, "preset": preset_name, "devices": preset.num_devices, "hbm_bytes": preset.hbm_bytes,
           "degrees": list(degrees), "seq_len": shape.seq_len, "rollout_batch": shape.rollout_batch,
           "rollout_chunk": chunk, "cache_length": shape.cache_length, "prompt_len": shape.prompt_len,
           "dtype": shape.dtype, "param_dtype": shape.param_dtype, "update": None, "sampler": None,
           "depth": depth, "status": "analytic", "notes": [], "tried": [], "sampler_tried": []}
    _set_shape(row, model, degrees, shape)
    if not compile_programs:
        return row
    from common.aot.topology import TopologyUnavailableError, preset_devices
    from common.sharding import make_mesh

    try:
        devices = preset_devices(preset)
    except TopologyUnavailableError as err:
        row["notes"].append(str(err).split(";")[0])
        return row
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), degrees)), devices)
    tag = f"{size}__{preset_name}__{'x'.join(map(str, degrees))}__p{prompt_len}__r{shape.response_len}__{depth}"
    reference = row["estimate"]["reference"]
    for shape in candidates[:max_update_compiles]:
        _set_shape(row, model, degrees, shape)
        result = cache.get_or_compile(
            f"update__{tag}__m{shape.micro_batch}__remat{int(shape.remat)}",
            lambda: at_depth(model, depth, lambda m: compile_update(m, mesh, shape, cfg)))
        row["update"] = result
        row["tried"].append({"micro_batch": shape.micro_batch, "remat": shape.remat,
                             "total": row_total(result), "refused": result.get("refused")})
        print(f"  update micro_batch={shape.micro_batch} remat={shape.remat}: {_describe(result)}", flush=True)
        if fits_budget(result, budget, reference):
            break
    if sampler:
        resident = row["estimate"]["optimizer"] + reference
        batch = chunk or max(shape.rollout_batch // 2, 1)
        for _ in range(max_sampler_compiles):
            result = cache.get_or_compile(f"sampler__{tag}__b{batch}__c{shape.cache_length}",
                                          lambda: at_depth(model, depth,
                                                           lambda m: compile_sampler(m, mesh, shape, batch)))
            row["sampler"] = result | {"batch": batch}
            row["sampler_tried"].append({"batch": batch, "total": row_total(result), "refused": result.get("refused")})
            print(f"  sampler batch={batch}: {_describe(result)}", flush=True)
            if fits_budget(result, budget, resident) or batch // 2 < degrees[0] * degrees[1]:
                break
            batch //= 2
    refused = [p for p in (row["update"], row["sampler"]) if p and "refused" in p]
    row["status"] = "compiled" + (", compiler refused the last try" if refused else "")
    if depth != "full":
        row["status"] += f" (extrapolated from {EXTRAPOLATION_DEPTHS[0]} and {EXTRAPOLATION_DEPTHS[1]} layers)"
    return row


def _describe(result: dict) -> str:
    if "refused" in result:
        need = result["refused"]["required_temporaries"]
        return (f"refused by the compiler (temporaries {_g(need)} GiB > HBM) after "
                f"{result['compile_seconds']:.0f} s")
    return f"{_g(row_total(result))} GiB in {result['compile_seconds']:.0f} s"


def _set_shape(row: dict, model, degrees, shape: JobShape) -> None:
    est = estimate_memory(model, degrees, shape)
    row.update(micro_batch=shape.micro_batch, remat=shape.remat, per_device_micro_batch=est.per_device_micro_batch,
               estimate=dataclasses.asdict(est) | {"train_peak": est.train_peak, "sample_peak": est.sample_peak,
                                                   "resident": est.resident})


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
    during sampling), else the analytic estimate (sampling: at the analytic rollout chunk)."""
    e = row["estimate"]
    train = _compiled_peak(row["update"], e["reference"]) if row["update"] else e["train_peak"]
    if row["sampler"]:
        sample = _compiled_peak(row["sampler"], e["optimizer"] + e["reference"])
    elif row["rollout_chunk"]:
        sample = e["resident"] + (e["sample_peak"] - e["resident"]) * row["rollout_chunk"] / row["rollout_batch"]
    else:
        sample = math.inf
    return train, sample


def sampler_batch(row: dict) -> int:
    return row["sampler"]["batch"] if row["sampler"] else row["rollout_chunk"]


def verdict(row: dict, headroom: float) -> str:
    """"fits", "fits, rollouts in chunks of N" (the configured sampler batch would not), or "DOES NOT FIT"."""
    budget = row["hbm_bytes"] * headroom
    train, sample = peaks(row)
    if train > budget or sample > budget:
        return "DOES NOT FIT"
    if sampler_batch(row) < row["rollout_batch"]:
        return f"fits, rollouts in chunks of {sampler_batch(row)}"
    return "fits"


def _g(n) -> str:
    if n is None:
        return "-"
    return "inf" if n == math.inf else f"{n / 2**30:.1f}"


def _program_md(part: dict | None, detail: bool) -> tuple[str, str]:
    """(bytes cell, compile-seconds cell) of one program."""
    if part is None:
        return "-", "-"
    seconds = f"{part['compile_seconds']:.0f}"
    if "refused" in part:
        return f"refused: needs {_g(part['refused']['required_temporaries'])} temp", seconds
    if not detail:
        return f"**{_g(row_total(part))}**", seconds
    return (f"{_g(part['arguments'])} / {_g(part['temporaries'])} / {_g(part['outputs'] - part['alias'])} / "
            f"**{_g(row_total(part))}**"), seconds


def _row_md(r: dict, headroom: float) -> str:
    e = r["estimate"]
    train, sample = peaks(r)
    update, update_s = _program_md(r["update"], True)
    sampler, sampler_s = _program_md(r["sampler"], False)
    if r["update"] is None:
        update = f"est. {_g(e['train_peak'])}"
    cells = [r["size"], r["preset"], f"{r['devices']} x {r['hbm_bytes'] / 2**30:.0f}", "/".join(map(str, r["degrees"])),
             f"{r['micro_batch']} ({r['per_device_micro_batch']}), {'on' if r['remat'] else 'off'}", update, update_s,
             f"{sampler_batch(r)}: {sampler}", sampler_s,
             f"{_g(e['params'])} / {_g(e['optimizer'])} / {_g(e['gradients'])} / {_g(e['kv_cache'])}",
             f"{_g(train)} / {_g(sample)}", f"{verdict(r, headroom)} ({r['status']})"]
    return "| " + " | ".join(cells) + " |"


def markdown(rows: list[dict], command: str, headroom: float, cfg, cfg_path: str, libtpu: str | None) -> str:
    g = cfg.grpo
    r0 = rows[0]
    lines = [
        "# Memory plan: GRPO on Qwen2.5, per device, compiled ahead of time",
        "",
        "Generated (do not edit by hand) by",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Config `{cfg_path}` (the paper recipe): {g.mini_batch_prompts} prompts x G={g.group_size} = "
        f"{g.mini_batch_prompts * g.group_size} sequences per optimiser update, responses up to "
        f"{g.max_response_len} tokens, prompts padded to {r0['seq_len'] - g.max_response_len} tokens, "
        f"{'a KL reference copy held (kl_coef > 0), ' if g.kl_coef > 0 else ''}AdamW, {r0['dtype']} compute with "
        f"{r0['param_dtype']} parameters. Rollouts: {g.prompts_per_step} prompts x {g.group_size} = "
        f"{r0['rollout_batch']} sequences per step, KV cache of {r0['cache_length']} slots each.",
        f"TPU programs are compiled for the real chips by libtpu {libtpu or '(not installed)'} through "
        "`jax.experimental.topologies` on a CPU host: nothing ran, no TPU memory was used. GPU presets "
        "compile only on a GPU host; without one their rows are analytic.",
        "",
        "Columns, GiB per device:",
        "",
        "- **update** = `compiled.memory_analysis()` of the GRPO update step (`make_update_fn`): arguments "
        "(parameters + optimiser state + batch) / temporaries (activations, gradients, scratch) / outputs "
        "(new parameters + optimiser state: the step does not donate its inputs) / total.",
        "- **sampler** = compiled total of the prefill + decode program (`common.sampler._decode_loop`) at "
        "the sampler batch shown: parameters + KV cache + scratch. When the configured batch cannot fit, "
        "the largest power-of-two chunk that does is compiled instead.",
        "- **analytic** = parameters / optimiser state / gradients (accumulated + one micro-batch's) / KV "
        "cache at the configured rollout batch, from the rules table (`common.aot.estimate`).",
        "- **peaks** = training (update total + reference copy) / sampling (sampler total + optimiser state + "
        f"reference copy). A row fits when both stay under {headroom:.0%} of HBM.",
        "",
        "| size | slice | chips x GiB | mesh data/fsdp/tensor | micro-batch (per device), remat | "
        "update args / temp / out / **total** | compile s | sampler batch: **total** | compile s | "
        "analytic params / opt / grads / KV | peaks train / sample | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row_md(r, headroom) for r in rows]
    tried = [(r["size"], r["preset"], f"update micro-batch {t['micro_batch']}, remat {'on' if t['remat'] else 'off'}", t)
             for r in rows for t in r.get("tried", [])[:-1]]
    tried += [(r["size"], r["preset"], f"sampler batch {t['batch']}", t)
              for r in rows for t in r.get("sampler_tried", [])[:-1]]
    if tried:
        lines += ["", "Tried before the choice in the table (over budget, or refused by the compiler):", ""]
        lines += [f"- {s} on {p}, {what}: " + (f"refused, temporaries need {_g(t['refused']['required_temporaries'])} GiB"
                                                if t.get("refused") else f"{_g(t['total'])} GiB")
                  for s, p, what, t in tried]
    notes = [(r["size"], r["preset"], n) for r in rows for n in r["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {s} on {p}: {n}" for s, p, n in notes]
    lines += ["", "`python tools/memory_plan.py --check --sizes <size> --presets <slice>` exits 1 on a row that "
              "does not fit and prints what to change (more chips, more fsdp, remat, a smaller micro-batch, "
              "fewer sequences per sampler call)."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG, help="GRPO config file (default: %(default)s)")
    p.add_argument("--sizes", default="all", help="comma-separated model presets, or 'all' (%(default)s)")
    p.add_argument("--presets", default="recommended",
                   help="comma-separated mesh presets, or 'recommended' (each size's slice in RECOMMENDED)")
    p.add_argument("--prompt-len", type=int, default=512, help="prompt tokens per sequence (%(default)s)")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM, help="usable share of HBM (%(default)s)")
    p.add_argument("--no-compile", action="store_true", help="analytic estimate only")
    p.add_argument("--no-sampler", action="store_true", help="skip the sampler program")
    p.add_argument("--check", action="store_true", help="exit 1 with the remedies if a row does not fit")
    p.add_argument("--out", default=None, help=f"markdown table (the committed one: {DEFAULT_OUT})")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="per-row JSON results (resume) (%(default)s)")
    p.add_argument("--fresh", action="store_true", help="ignore (and do not write) cached compile results")
    p.add_argument("--depth", default="full", choices=("full", "extrapolate"),
                   help="compile every layer (full), or 2 and 4 layers and extend linearly (extrapolate)")
    p.add_argument("--extrapolate", default="", help="comma-separated sizes planned with --depth=extrapolate")
    return p.parse_args(argv)


def selected_rows(sizes: str, presets: str) -> list[tuple[str, str]]:
    size_list = list(SIZES) if sizes == "all" else sizes.split(",")
    for s in size_list:
        if s not in SIZES:
            raise KeyError(f"unknown size {s!r}; known: {SIZES}")
    if presets == "recommended":
        return [(s, RECOMMENDED[s]) for s in size_list]
    names = presets.split(",")
    for n in names:
        get_mesh_preset(n)
    return [(s, n) for s in size_list for n in names]


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.aot.topology import libtpu_version
    from common.config import get_preset
    from rl_scaling.grpo.setup import job_shape

    cfg = plan_config(load_grpo_config(args.config))
    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = ProgramCache(None if args.fresh else cache_dir)
    rows, failures = [], []
    for size, preset_name in selected_rows(args.sizes, args.presets):
        t = time.perf_counter()
        print(f"planning {size} on {preset_name} ...", flush=True)
        depth = "extrapolate" if size in args.extrapolate.split(",") else args.depth
        row = plan_row(size, preset_name, cfg, prompt_len=args.prompt_len, headroom=args.headroom,
                       compile_programs=not args.no_compile, sampler=not args.no_sampler, depth=depth,
                       cache=cache)
        row["wall_seconds"] = time.perf_counter() - t
        rows.append(row)
        (cache_dir / f"row__{size}__{preset_name}__p{args.prompt_len}__{depth}.json").write_text(
            json.dumps(row, indent=2))
        print(f"{size:14s} {preset_name:8s} mesh={row['degrees']} micro={row['micro_batch']} remat={row['remat']} "
              f"peaks={'/'.join(_g(x) for x in peaks(row))} GiB {verdict(row, args.headroom)} ({row['status']})",
              flush=True)
        if verdict(row, args.headroom).startswith("DOES NOT"):
            preset = get_mesh_preset(preset_name)
            shape = job_shape(cfg, args.prompt_len).replace(micro_batch=row["micro_batch"], remat=row["remat"])
            train_peak = peaks(row)[0]
            try:
                check_fits(get_preset(size), tuple(row["degrees"]), shape, hbm_bytes=preset.hbm_bytes,
                           num_devices=preset.num_devices, label=f"{size} on {preset_name}",
                           compiled_peak=None if train_peak == math.inf else int(train_peak),
                           headroom=args.headroom)
                failures.append(f"{size} on {preset_name}: the compiled sampler does not fit even at "
                                f"{sampler_batch(row)} sequences per call; use more chips")
            except MemoryPlanError as err:
                failures.append(str(err))
    if args.out:
        command = "JAX_PLATFORMS=cpu python tools/memory_plan.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(markdown(rows, command.strip(), args.headroom, cfg, args.config,
                                           libtpu_version()))
        print(f"wrote {args.out}")
    if failures:
        print("\n".join(["", "Does not fit:"] + failures), file=sys.stderr)
        return 1 if args.check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
