"""Ahead-of-time memory plan: compile the GRPO update step and the sampler for a slice, without running.

    python tools/memory_plan.py                           # every Qwen2.5 size on its recommended slice
    python tools/memory_plan.py --sizes qwen2_5_7b --presets v5p-64,v5e-64
    python tools/memory_plan.py --check --sizes qwen2_5_72b --presets v5e-64   # exit 1 if it cannot fit

For each (size, slice): the mesh degrees from common/mesh_presets.py, the micro-batch and remat chosen so
that the update fits (the analytic estimate picks the candidate, the compiler confirms it), then
`jit(make_update_fn(...)).lower(<ShapeDtypeStructs with shardings>).compile()` for the slice's real chips
(TPU: libtpu topologies on this CPU host; GPU presets compile only on such a host, otherwise analytic
only), the same for the sampler's prefill + decode at the sequences per sampler call the trainer would
use on that slice (`rl_scaling.grpo.setup.sequences_per_call`, the function the trainer calls at start, with
the slice's HBM), and for the largest decode step of the rollout engine the trainer builds there
(`rl_scaling.grpo.setup.make_rollout` itself: its slots and page pool, its bfloat16 inference copy of the
weights). Results per program are cached as JSON (--cache-dir), so an interrupted run resumes; the
markdown table goes to --out. Prompts are planned at the config's data.max_prompt_len unless --prompt-len.
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

from common.aot.topology import prepare_libtpu_env  # (no JAX import)

prepare_libtpu_env()

import ml_collections  # noqa: E402

from common.aot.compiled import ProgramCache, measured  # noqa: E402
from common.aot.estimate import JobShape, estimate_memory  # noqa: E402
from common.aot.fits import DEFAULT_HEADROOM, MemoryPlanError, check_fits  # noqa: E402
from common.aot.table import gib_text, markdown, peaks, row_total, verdict  # noqa: E402
from common.config_file import load_config  # noqa: E402
from common.mesh_presets import RECOMMENDED, SIZES, get_mesh_preset, layout  # noqa: E402

DEFAULT_CONFIG = "configs/grpo/base.py"
DEFAULT_OUT = "docs/memory_plan.md"
DEFAULT_CACHE = "artifacts/memory_plan"
PER_DEVICE_MICRO_BATCHES = (2, 1)
NO_REMAT_MARGIN = 0.6


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


def job_candidates(cfg, model, degrees, base: JobShape, budget: float, planned: JobShape | None = None
                   ) -> list[JobShape]:
    """Candidate shapes to compile, best first: `planned` (the recipe's layout for this size on this slice,
    what `paper_recipe` configures the trainer with) when given, then no remat at one sequence per device when
    the estimate leaves a wide margin, then remat at 2 and at 1 sequences per device. The estimate is rough
    about activations (see common.aot.estimate), so it only decides whether no-remat is worth a compile; the
    compiler decides the rest."""
    out = [] if planned is None else [planned]
    no_remat = [base.replace(micro_batch=m, remat=False) for m, r in micro_batch_candidates(cfg, degrees) if not r]
    if no_remat and estimate_memory(model, degrees, no_remat[-1]).train_peak <= NO_REMAT_MARGIN * budget:
        out.append(no_remat[-1])
    out += [base.replace(micro_batch=m, remat=True) for m, r in micro_batch_candidates(cfg, degrees) if r]
    return list(dict.fromkeys(out))  # each shape once, in order


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
    loss_cfg = dataclasses.replace(LossConfig.from_config(g), max_response_len=R)  # the trainer's, at R
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


def trainer_engine(cfg, model, mesh, shape: JobShape, prompt_len: int, chunk: int, platform: str, shards: int):
    """The rollout engine the trainer builds on this slice (`make_rollout`, the trainer's own function, on an
    abstract policy: the engine allocates nothing until it generates), or None when grpo.rollout_engine gives
    the trainer the static sampler on `platform` with the slice's `shards` batch shards. mesh None (a slice
    without devices here): the pool and slots are the same, only the rows of a call would be rounded as on
    this host."""
    from common.attention import select_backend
    from common.model import abstract_decoder
    from common.rollout import pick_rollout_engine
    from rl_scaling.grpo.setup import make_rollout, rollout_cache_length

    choice = str(cfg.grpo.get("rollout_engine", "auto") or "auto")
    if pick_rollout_engine(choice, platform, "grpo.rollout_engine") != "paged":
        return None
    policy = abstract_decoder(model, dtype=shape.dtype, param_dtype=shape.param_dtype,
                              attention=select_backend("auto", mesh=mesh) if mesh is not None else "xla")
    engine, _ = make_rollout(cfg, policy, mesh=mesh, pad_id=0, platform=platform, sequences_per_call=chunk,
                             batch_shards=shards,
                             max_cache_length=rollout_cache_length(cfg, prompt_len))
    return engine


def engine_sizes(engine, degrees: tuple[int, int, int]) -> dict:
    """The engine's pool (a batch shard's) and slots (over all shards), and per device the analytic bytes of its
    inference copy of the weights (`inference_copy_bytes`) and of its shard's pool (split over kv heads by
    tensor)."""
    from common.engine.weights import inference_copy_bytes
    from common.paged_kv import pool_bytes

    tensor = degrees[2] if engine.config.num_kv_heads % degrees[2] == 0 else 1
    return {"slots": engine.max_slots, "num_pages": engine.num_pages, "page_size": engine.page_size,
            "max_cache_length": engine.max_cache_length,
            "copy_bytes": inference_copy_bytes(engine.config, degrees, engine.weights_dtype or engine.dtype),
            "pool_bytes": pool_bytes(engine.config, engine.num_pages, engine.page_size, engine.dtype) // tensor}


def fits_budget(result: dict, budget: float, resident_outside: int = 0) -> bool:
    return "refused" not in result and row_total(result) + resident_outside <= budget


def plan_row(size: str, preset_name: str, cfg, *, prompt_len: int, headroom: float, compile_programs: bool,
             sampler: bool, engine: bool = True, degrees: tuple[int, int, int] | None = None,
             cache: ProgramCache | None = None, max_update_compiles: int = 2, max_sampler_compiles: int = 3) -> dict:
    """One row of the plan as a JSON-able dict. `degrees` default to the preset's layout for `size`.

    The update: candidates best first (job_candidates), compiled until one fits; the sampler: the largest
    trainer's sequences per sampler call on this slice (`sequences_per_call`: the same function and inputs
    as the trainer's), halved while the compiler refuses it or it does not fit (the verdict then says the
    trainer's number does not fit and which grpo.rollout_batch does); the engine: the largest decode step of
    the engine the trainer builds there (`trainer_engine`), when grpo.rollout_engine gives it one."""
    from common.config import get_preset
    from rl_scaling.grpo.setup import job_shape, sequences_per_call

    cache = cache or ProgramCache(None)
    preset = get_mesh_preset(preset_name)
    model = get_preset(size)
    degrees = tuple(degrees or preset.degrees(size))
    budget = preset.hbm_bytes * headroom
    base = job_shape(cfg, prompt_len, degrees)
    planned = None
    if tuple(degrees) == tuple(preset.degrees(size)):  # the slice's own layout: the recipe's micro-batch and remat
        plan = layout(preset, size)
        planned = base.replace(micro_batch=plan.micro_batch, remat=plan.remat)
    candidates = job_candidates(cfg, model, degrees, base, budget, planned)
    shape = candidates[0]
    chunk, _ = sequences_per_call(cfg, model, degrees, preset.hbm_bytes, prompt_len=prompt_len, headroom=headroom)
    row = {"size": size, "preset": preset_name, "devices": preset.num_devices, "hbm_bytes": preset.hbm_bytes,
           "degrees": list(degrees), "seq_len": shape.seq_len, "rollout_batch": shape.rollout_batch,
           "rollout_chunk": chunk, "cache_length": shape.cache_length, "prompt_len": shape.prompt_len,
           "dtype": shape.dtype, "param_dtype": shape.param_dtype, "update": None, "sampler": None,
           "engine": None, "engine_plan": None, "status": "analytic", "notes": [], "tried": [], "sampler_tried": []}
    _set_shape(row, model, degrees, shape)
    if engine and (built := trainer_engine(cfg, model, None, shape, prompt_len, chunk, preset.platform,
                                           degrees[0] * degrees[1])):
        row["engine_plan"] = engine_sizes(built, degrees)
    if not compile_programs:  # the first candidate the estimate says fits (else the best one)
        fitting = [c for c in candidates if estimate_memory(model, degrees, c).train_peak <= budget]
        if fitting:
            _set_shape(row, model, degrees, fitting[0])
        return row
    from common.aot.topology import TopologyUnavailableError, preset_devices
    from common.sharding import make_mesh

    try:
        devices = preset_devices(preset)
    except TopologyUnavailableError as err:
        row["notes"].append(str(err).split(";")[0])
        return row
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), degrees)), devices)
    # "full": every layer compiled. (Compiling 2 and 4 layers and extrapolating does not work: XLA
    # rematerialises under memory pressure, so temporaries are not affine in depth.)
    tag = f"{size}__{preset_name}__{'x'.join(map(str, degrees))}__p{prompt_len}__r{shape.response_len}__full"
    reference = row["estimate"]["reference"]
    for shape in candidates[:max_update_compiles]:
        _set_shape(row, model, degrees, shape)
        result = cache.get_or_compile(
            f"update__{tag}__m{shape.micro_batch}__remat{int(shape.remat)}",
            lambda: measured(lambda: compile_update(model, mesh, shape, cfg)))
        row["update"] = result
        row["tried"].append({"micro_batch": shape.micro_batch, "remat": shape.remat,
                             "total": row_total(result), "refused": result.get("refused")})
        print(f"  update micro_batch={shape.micro_batch} remat={shape.remat}: {_describe(result)}", flush=True)
        if fits_budget(result, budget, reference):
            break
    if sampler:
        resident = row["estimate"]["optimizer"] + reference
        batch = chunk
        for _ in range(max_sampler_compiles):
            result = cache.get_or_compile(f"sampler__{tag}__b{batch}__c{shape.cache_length}",
                                          lambda: measured(lambda: compile_sampler(model, mesh, shape, batch)))
            row["sampler"] = result | {"batch": batch}
            row["sampler_tried"].append({"batch": batch, "total": row_total(result), "refused": result.get("refused")})
            print(f"  sampler batch={batch}: {_describe(result)}", flush=True)
            if fits_budget(result, budget, resident) or batch // 2 < degrees[0] * degrees[1]:
                break
            batch //= 2
    if row["engine_plan"]:
        plan_engine(row, cache, cfg, model, mesh, shape, prompt_len, tag, platform=preset.platform, budget=budget)
    refused = [p for p in (row["update"], row["sampler"], row["engine"]) if p and "refused" in p]
    row["status"] = "compiled" + (", compiler refused the last try" if refused else "")
    return row


def plan_engine(row: dict, cache: ProgramCache, cfg, model, mesh, shape: JobShape, prompt_len: int, tag: str,
                *, platform: str, budget: float = math.inf, max_compiles: int = 8) -> None:
    """row["engine"]: the compiled largest decode step of the trainer's engine on `mesh`, sampling as the
    trainer's rollouts do (grpo.temperature, top_k, top_p), with its pool and slots (`engine_sizes`). First the
    engine of the trainer's sequences per call (row["rollout_chunk"]); while the compiler refuses it or it does
    not fit `budget` beside the trainer's state, the engine of half as many (what grpo.rollout_batch=N gives
    the trainer: a pool of N / batch shards full-length sequences, as many slots unless grpo.engine_slots),
    down to one per batch shard."""
    from common.aot.engine import compile_largest_decode_step, largest_decode_step

    g, e = cfg.grpo, row["estimate"]
    sampling = dict(temperature=float(g.temperature), top_k=int(g.top_k), top_p=float(g.top_p))
    resident = e["params"] + e["optimizer"] + e["reference"]
    per_call, shards = row["rollout_chunk"], row["degrees"][0] * row["degrees"][1]
    row["engine_tried"] = []
    for _ in range(max_compiles):
        built = trainer_engine(cfg, model, mesh, shape, prompt_len, per_call, platform, shards)
        rows, pages = largest_decode_step(built)
        key = (f"engine__{tag}__s{rows}__w{pages}__n{built.num_pages}__g{built.page_size}__"
               f"t{sampling['temperature']:g}k{sampling['top_k']}p{sampling['top_p']:g}")
        result = cache.get_or_compile(key, lambda: measured(
            lambda: compile_largest_decode_step(built, mesh, **sampling).memory))
        row["engine"] = result | engine_sizes(built, tuple(row["degrees"])) | {
            "rows": rows, "pages_per_row": pages, "sequences_per_call": per_call}
        row["engine_tried"].append({"batch": per_call, "total": row_total(result), "refused": result.get("refused")})
        print(f"  engine step at {per_call} sequences per call, rows={rows} pages/row={pages} "
              f"pool={built.num_pages} pages: {_describe(result)}", flush=True)
        if fits_budget(result, budget, resident) or per_call // 2 < shards:
            break
        per_call //= 2


def _describe(result: dict) -> str:
    if "refused" in result:
        need = result["refused"]["required_temporaries"]
        return (f"refused by the compiler (temporaries {gib_text(need)} GiB > HBM) after "
                f"{result['compile_seconds']:.0f} s")
    return f"{gib_text(row_total(result))} GiB in {result['compile_seconds']:.0f} s"


def _set_shape(row: dict, model, degrees, shape: JobShape) -> None:
    """The row's update shape and its estimate; `sample_peak_per_call`: sampling at row["rollout_chunk"]."""
    est = estimate_memory(model, degrees, shape)
    per_call = estimate_memory(model, degrees, shape.replace(rollout_batch=row["rollout_chunk"]))
    row.update(micro_batch=shape.micro_batch, remat=shape.remat, per_device_micro_batch=est.per_device_micro_batch,
               estimate=dataclasses.asdict(est) | {"train_peak": est.train_peak, "sample_peak": est.sample_peak,
                                                   "resident": est.resident,
                                                   "sample_peak_per_call": per_call.sample_peak})


def recipe_text(cfg, cfg_path: str, row: dict) -> str:
    """The paragraph under the table's title: what was planned."""
    g = cfg.grpo
    return (f"Config `{cfg_path}` (the paper recipe): {g.mini_batch_prompts} prompts x G={g.group_size} = "
            f"{g.mini_batch_prompts * g.group_size} sequences per optimiser update, responses up to "
            f"{g.max_response_len} tokens, prompts padded to {row['seq_len'] - g.max_response_len} tokens, "
            f"{'a KL reference copy held (kl_coef > 0), ' if g.kl_coef > 0 else ''}AdamW, {row['dtype']} compute "
            f"with {row['param_dtype']} parameters. Rollouts: {g.prompts_per_step} prompts x {g.group_size} = "
            f"{row['rollout_batch']} sequences per step, KV cache of {row['cache_length']} slots each, generated in "
            f"sampler calls of the size the trainer computes from the chips' HBM (sampler batch column).")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG, help="GRPO config file (default: %(default)s)")
    p.add_argument("--sizes", default="all", help="comma-separated model presets, or 'all' (%(default)s)")
    p.add_argument("--presets", default="recommended",
                   help="comma-separated mesh presets; 'recommended' (alone or in the list) is each size's own "
                        "slice (RECOMMENDED); docs/memory_plan.md: recommended,1xh100,8xh100")
    p.add_argument("--prompt-len", type=int, default=0,
                   help="prompt tokens per sequence (default: the config's data.max_prompt_len, as the trainer)")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM, help="usable share of HBM (%(default)s)")
    p.add_argument("--no-compile", action="store_true", help="analytic estimate only")
    p.add_argument("--no-sampler", action="store_true", help="skip the sampler program")
    p.add_argument("--no-engine", action="store_true", help="skip the rollout engine's decode step")
    p.add_argument("--estimate-only", default="",
                   help="comma-separated sizes planned analytically only, e.g. those whose compile needs more "
                        "host memory than this machine has (the 72B update needs more than 24 GiB)")
    p.add_argument("--check", action="store_true", help="exit 1 with the remedies if a row does not fit")
    p.add_argument("--out", default=None, help=f"markdown table (the committed one: {DEFAULT_OUT})")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="per-row JSON results (resume) (%(default)s)")
    p.add_argument("--fresh", action="store_true", help="ignore (and do not write) cached compile results")
    return p.parse_args(argv)


def selected_rows(sizes: str, presets: str) -> list[tuple[str, str]]:
    size_list = list(SIZES) if sizes == "all" else sizes.split(",")
    for s in size_list:
        if s not in SIZES:
            raise KeyError(f"unknown size {s!r}; known: {SIZES}")
    rows = []  # "recommended" (alone or in the list): each size's own slice
    for name in presets.split(","):
        for size in size_list:
            preset = RECOMMENDED[size] if name == "recommended" else get_mesh_preset(name).name
            if (size, preset) not in rows:
                rows.append((size, preset))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.aot.topology import libtpu_version
    from common.config import get_preset
    from rl_scaling.grpo.setup import job_shape

    cfg = plan_config(load_config(args.config))
    args.prompt_len = args.prompt_len or int(cfg.data.max_prompt_len)
    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = ProgramCache(None if args.fresh else cache_dir)
    rows, failures = [], []
    for size, preset_name in selected_rows(args.sizes, args.presets):
        t = time.perf_counter()
        print(f"planning {size} on {preset_name} ...", flush=True)
        estimate_only = size in args.estimate_only.split(",")
        row = plan_row(size, preset_name, cfg, prompt_len=args.prompt_len, headroom=args.headroom,
                       compile_programs=not (args.no_compile or estimate_only), sampler=not args.no_sampler,
                       engine=not args.no_engine, cache=cache)
        if estimate_only:
            row["notes"].append("analytic estimate only (--estimate-only): compiling this size needs more host "
                                "memory than the machine that made this table had; rerun there without the flag")
        row["wall_seconds"] = time.perf_counter() - t
        rows.append(row)
        (cache_dir / f"row__{size}__{preset_name}__p{args.prompt_len}.json").write_text(
            json.dumps(row, indent=2))
        print(f"{size:14s} {preset_name:8s} mesh={row['degrees']} micro={row['micro_batch']} remat={row['remat']} "
              f"peaks={'/'.join(gib_text(x) for x in peaks(row))} GiB {verdict(row, args.headroom)} ({row['status']})",
              flush=True)
        if verdict(row, args.headroom).startswith("DOES NOT"):
            preset = get_mesh_preset(preset_name)
            shape = job_shape(cfg, args.prompt_len, tuple(row["degrees"])).replace(
                micro_batch=row["micro_batch"], remat=row["remat"])
            train_peak = peaks(row)[0]
            try:
                check_fits(get_preset(size), tuple(row["degrees"]), shape, hbm_bytes=preset.hbm_bytes,
                           num_devices=preset.num_devices, label=f"{size} on {preset_name}",
                           compiled_peak=None if train_peak == math.inf else int(train_peak),
                           headroom=args.headroom, sequences_per_call=row["rollout_chunk"])
                failures.append(f"{size} on {preset_name}: {verdict(row, args.headroom)}")
            except MemoryPlanError as err:
                failures.append(str(err))
                row["notes"].append("does not fit: " + str(err).split(" does not fit: ", 1)[-1].replace("\n  - ", " · "))
    if args.out:
        command = "JAX_PLATFORMS=cpu python tools/memory_plan.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(markdown(rows, command.strip(), args.headroom,
                                           recipe_text(cfg, args.config, rows[0]), libtpu_version()))
        print(f"wrote {args.out}")
    if failures:
        print("\n".join(["", "Does not fit:"] + failures), file=sys.stderr)
        return 1 if args.check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
