"""Building what a GRPO run needs from its config: the policy, the tokenizer, the prompt sets, and the work
and memory per device (micro-batch per batch shard, sequences per sampler call) — the numbers the trainer
uses and `tools/memory_plan.py` reports, from the same functions."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from common import load_pretrained
from common.config import get_preset
from common.attention import select_backend
from common.model import Decoder
from common.sharding import MESH_AXES, make_mesh, named_sharding
from common.tokenizer import char_tokenizer
from rl_scaling.data import (DATASETS, Problem, TableOptions, load_problems, load_table, problems_file,
                             render_prompt, reuse_subset, study_split, synthetic_arithmetic)
from rl_scaling.grpo.chunked_logprobs import DEFAULT_LOGPROB_CHUNK


def build_mesh(cfg):
    shape = {k: int(v) for k, v in cfg.mesh.items()}
    if all(v in (1, -1) for v in shape.values()) and jax.device_count() == 1:
        return None
    return make_mesh(shape)


def build_policy(cfg, mesh):
    """(model, tokenizer) as the config says; model.attention picks the attention backend (`common.attention`)."""
    m = cfg.model
    attention = m.attention
    tokenizer = None
    if m.tokenizer.startswith("char"):  # "char" or "char:<alphabet>"
        tokenizer = char_tokenizer(m.tokenizer[5:]) if m.tokenizer.startswith("char:") else char_tokenizer()
    if m.init == "random":
        if not m.preset:
            raise ValueError("model.init='random' needs model.preset (e.g. 'tiny')")
        model_cfg = get_preset(m.preset)
        if tokenizer is not None:  # a random model takes its vocabulary size from its tokenizer
            model_cfg = model_cfg.replace(vocab_size=len(tokenizer))
        model = Decoder(model_cfg, dtype=m.dtype, param_dtype=m.param_dtype, rngs=nnx.Rngs(cfg.seed),
                        attention=select_backend(attention, mesh=mesh))
        if mesh is not None:
            for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
                sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], var.shape)
                var[...] = jax.device_put(var[...], sharding)
    elif m.init == "pretrained":
        model, own_tokenizer = load_pretrained(m.path, dtype=m.dtype, param_dtype=m.param_dtype, mesh=mesh,
                                               attention=attention)
        tokenizer = tokenizer or own_tokenizer
    else:
        raise KeyError(f"unknown model.init {m.init!r}; known: pretrained, random")
    if tokenizer is None:
        raise ValueError("a random model needs model.tokenizer (e.g. 'char')")
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} ids but the model's vocabulary is "
                         f"{model.config.vocab_size}")
    return model, tokenizer


def table_options(data_cfg) -> TableOptions:
    """How data.source is read when it is a table: data.prompt_wrapper, .pass_rate_column, .difficulty_column."""
    return TableOptions(prompt_wrapper=data_cfg.get("prompt_wrapper", "strip"),
                        pass_rate_column=data_cfg.get("pass_rate_column", ""),
                        difficulty_column=data_cfg.get("difficulty_column", ""))


def load_pool(cfg) -> list[Problem]:
    d = cfg.data
    if d.source == "synthetic":
        return synthetic_arithmetic(d.synthetic_size, d.synthetic_level, cfg.seed)
    if d.source in DATASETS:
        return load_problems(d.source, split=d.split)
    path = Path(d.source)
    if path.suffix in (".jsonl", ".parquet", ".json"):
        return load_table(path, table_options(d))
    raise KeyError(f"unknown data.source {d.source!r}: 'synthetic', one of {sorted(DATASETS)}, "
                   "or a .jsonl / .parquet file")


@dataclasses.dataclass
class PromptSet:
    problems: list[Problem]
    prompt_ids: list[list[int]]


def encode_prompts(problems, tokenizer, cfg) -> tuple[PromptSet, int]:
    """Renders and tokenises; drops prompts longer than data.max_prompt_len. Returns (set, dropped)."""
    chat = None
    if cfg.data.chat:
        chat = lambda msgs: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    kept, ids = [], []
    for p in problems:
        toks = tokenizer(render_prompt(p, cfg.data.template, chat), add_special_tokens=False)["input_ids"]
        if len(toks) <= cfg.data.max_prompt_len:
            kept.append(p)
            ids.append(toks)
    return PromptSet(kept, ids), len(problems) - len(kept)


def load_downstream_sets(cfg, tokenizer) -> dict[str, PromptSet]:
    """eval.downstream ("gsm8k,math500", names or files) as prompt sets, each cut to eval.downstream_limit
    problems (0 = all). Prompts longer than data.max_prompt_len are dropped; a set left empty is an error.
    A set whose file is missing is an error naming the expected path, or with eval.downstream_missing =
    "skip" a warning naming it, and the set is left out."""
    names = [n.strip() for n in str(cfg.eval.downstream).split(",") if n.strip()]
    missing_policy = cfg.eval.get("downstream_missing", "error")
    if missing_policy not in ("error", "skip"):
        raise ValueError(f"unknown eval.downstream_missing {missing_policy!r}; choices: ['error', 'skip']")
    sets = {}
    for name in names:
        if missing_policy == "skip" and not problems_file(name).is_file():
            warnings.warn(f"eval.downstream {name!r} skipped: no file at {problems_file(name)} (data root layout: "
                          "docs/data.md; eval.downstream_missing='error' makes this an error)", stacklevel=2)
            continue
        problems = load_problems(name, split="test")
        if cfg.eval.downstream_limit:
            problems = problems[:cfg.eval.downstream_limit]
        prompt_set, dropped = encode_prompts(problems, tokenizer, cfg)
        if not prompt_set.problems:
            raise ValueError(f"eval.downstream {name!r}: all {len(problems)} prompts are longer than "
                             f"data.max_prompt_len={cfg.data.max_prompt_len}")
        sets[Path(name).stem if name not in DATASETS else name] = prompt_set
    return sets


def split_train_heldout(cfg, pool: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    """The study's held-out split and training order (`rl_scaling.data.study_split`: balanced easy/hard when
    difficulties exist; data.curriculum without them is an error unless data.without_difficulty='file_order',
    which warns), then the reuse subset."""
    d = cfg.data
    split = study_split(pool, d.heldout_size, cfg.seed, curriculum=bool(d.curriculum),
                        without_difficulty=d.get("without_difficulty", "error"), source=str(d.source))
    for note in split.notes:
        warnings.warn(note, stacklevel=2)
    train, heldout = split.train, split.heldout
    if d.reuse_tau:
        total = cfg.num_steps * cfg.grpo.prompts_per_step
        train = reuse_subset(train, total, d.reuse_tau, cfg.seed)
    return train, heldout


def mesh_degrees(mesh) -> tuple[int, int, int]:
    """(data, fsdp, tensor) of a mesh; (1, 1, 1) for none (one device)."""
    return (1, 1, 1) if mesh is None else tuple(int(mesh.shape[a]) for a in MESH_AXES)


def micro_batch_sequences(g, batch_shards: int) -> int:
    """Sequences in one gradient micro-batch over the whole mesh: grpo.micro_batch_size when set (a global
    count, e.g. tools/launch.py's for its slice), else grpo.micro_batch_per_device x the mesh's batch shards
    (data x fsdp), so that a recipe splits over whatever slice runs it."""
    if g.micro_batch_size:
        return int(g.micro_batch_size)
    per_device = int(g.get("micro_batch_per_device", 0) or 0)
    if per_device < 1:
        raise ValueError("set grpo.micro_batch_size (sequences over the whole mesh) or grpo.micro_batch_per_device "
                         "(sequences per data x fsdp batch shard)")
    return per_device * batch_shards


def check_micro_batch(g, batch_shards: int) -> int:
    """`micro_batch_sequences`, refused unless it splits a mini-batch into whole micro-batches and splits
    over the batch shards (else the rules table replicates the batch and every shard computes the same
    update)."""
    m = micro_batch_sequences(g, batch_shards)
    mini = g.mini_batch_prompts * g.group_size
    if m < 1 or mini % m:
        raise ValueError(f"a mini-batch of {mini} sequences (grpo.mini_batch_prompts={g.mini_batch_prompts} x "
                         f"group_size={g.group_size}) does not split into micro-batches of {m}")
    if m % batch_shards:
        raise ValueError(f"a micro-batch of {m} sequences (grpo.micro_batch_size) does not split over the mesh's "
                         f"data x fsdp = {batch_shards} batch shards: every shard would compute the same update. "
                         f"Set grpo.micro_batch_per_device (sequences per shard; e.g. "
                         f"{max(m // batch_shards, 1)} gives {max(m // batch_shards, 1) * batch_shards}) with "
                         f"grpo.micro_batch_size=0, or a micro_batch_size that is a multiple of {batch_shards}")
    return m


def reference_dtype(cfg) -> str:
    """The KL reference copy's dtype: grpo.reference_dtype, or the parameters' when unset."""
    return str(cfg.grpo.get("reference_dtype", "") or cfg.model.param_dtype)


def job_shape(cfg, prompt_len: int | None = None, degrees: tuple[int, int, int] = (1, 1, 1)):
    """The sizes of this run that decide its memory (`common.aot.estimate.JobShape`) on a mesh of `degrees`;
    `prompt_len` defaults to data.max_prompt_len, the longest prompt the run keeps."""
    from common.aot.estimate import JobShape
    from common.sampler import call_shape

    g, m = cfg.grpo, cfg.model
    prompt_len = prompt_len or cfg.data.max_prompt_len
    # the trainer's sampler holds rollout_cache_length slots; a rollout call asks for max_response_len
    prompt_bucket, cache_length = call_shape(prompt_len, g.max_response_len, rollout_cache_length(cfg, prompt_len))
    return JobShape(micro_batch=micro_batch_sequences(g, degrees[0] * degrees[1]),
                    seq_len=prompt_len + g.max_response_len, response_len=g.max_response_len, remat=bool(m.remat),
                    dtype=m.dtype, param_dtype=m.param_dtype, frozen_copies=1 if g.kl_coef > 0 else 0,
                    reference_dtype=reference_dtype(cfg), reference_on_host=bool(g.get("reference_on_host", False)),
                    donated=True,  # make_update_fn donates parameters and optimiser state
                    rollout_batch=g.prompts_per_step * g.group_size, prompt_len=prompt_bucket,
                    cache_length=cache_length, logprob_chunk=int(g.get("logprob_chunk", DEFAULT_LOGPROB_CHUNK)))


def rollout_cache_length(cfg, longest_prompt: int) -> int:
    """Positions a sequence may hold in the trainer's rollouts (the sampler's or the engine's
    max_cache_length): its longest prompt and the most new tokens a rollout or an evaluation asks for."""
    g = cfg.grpo
    return longest_prompt + max(g.max_response_len, cfg.eval.max_new_tokens or g.max_response_len)


def sequences_per_call(cfg, model_config, degrees: tuple[int, int, int], device_bytes: int | None, *,
                       prompt_len: int | None = None, headroom: float | None = None) -> tuple[int, str]:
    """(sequences per sampler call, where that number comes from) for a run of `cfg` on a mesh of `degrees`
    whose devices have `device_bytes` each (None: unknown): grpo.rollout_batch when set; else
    `common.aot.fits.rollout_chunk` for grpo.rollout_memory_gib, or for `device_bytes`; else (no memory
    known) every sequence of a step in one call. The trainer calls it once at start with its device's
    limit, `tools/memory_plan.py` with the slice's HBM."""
    from common.aot.fits import DEFAULT_HEADROOM, rollout_chunk

    g = cfg.grpo
    total = g.prompts_per_step * g.group_size
    if g.get("rollout_batch", 0):
        return min(int(g.rollout_batch), total), "grpo.rollout_batch"
    gib = float(g.get("rollout_memory_gib", 0) or 0)
    if gib:
        memory, source = int(gib * 2**30), f"grpo.rollout_memory_gib={gib:g}"
    elif device_bytes:
        memory, source = int(device_bytes), f"{device_bytes / 2**30:.1f} GiB per device"
    else:
        return total, ("all at once: the device reports no memory limit (grpo.rollout_memory_gib or "
                       "grpo.rollout_batch bound it)")
    shape = job_shape(cfg, prompt_len, degrees)
    chunk = rollout_chunk(model_config, degrees, shape, memory,
                          DEFAULT_HEADROOM if headroom is None else headroom)
    if chunk == 0:
        return min(degrees[0] * degrees[1], total), f"{source}; the estimate says not even this many fit"
    return chunk, f"{source}, the estimate of common.aot.fits.rollout_chunk"


def length_ladder_halves(g) -> bool:
    """Whether packed lengths take the 1.5 x 2^k rungs too (grpo.length_ladder: "halves" or "pow2")."""
    ladder = str(g.get("length_ladder", "pow2"))
    if ladder not in ("pow2", "halves"):
        raise ValueError(f"grpo.length_ladder must be 'pow2' or 'halves', got {ladder!r}")
    return ladder == "halves"


def make_rollout(cfg, model, *, mesh, pad_id: int, max_cache_length: int, sequences_per_call: int,
                 platform: str, batch_shards: int | None = None):
    """(the trainer's `Rollout`, sequences per generate call). The static sampler generates in calls of
    `sequences_per_call` (its cache split over the batch shards); the paged engine takes a step's sequences in
    one call with one page pool per batch shard, each holding what one chip holds of the sampler's cache:
    `sequences_per_call` / batch shards sequences of full length; its decode slots (over all shards)
    grpo.engine_slots (0: as many as that memory holds at full length; short sequences leave pages free for
    more), grpo.engine_decode_steps decode steps a round trip (0: `default_decode_steps(platform)`); it decodes
    from a copy of the policy in the compute dtype, laid out for inference (`common.engine.weights`), made once
    per update. Which of the two: grpo.rollout_engine on `platform` (`common.rollout.pick_rollout_engine`:
    "auto" is the engine on an accelerator, the sampler on a CPU).
    batch_shards: None for the mesh's (`common.sharding.batch_shards`); the memory plan gives a slice's without
    its devices."""
    from common.engine import Engine
    from common.engine.engine import default_decode_steps
    from common.rollout import pick_rollout_engine
    from common.sampler import Sampler
    from common.sharding import batch_shards as shards_of

    g = cfg.grpo
    shards = shards_of(mesh) if batch_shards is None else batch_shards
    engine = pick_rollout_engine(str(g.get("rollout_engine", "auto") or "auto"), platform, "grpo.rollout_engine")
    if engine == "static":
        return Sampler(model, mesh=mesh, pad_id=pad_id, max_cache_length=max_cache_length,
                       adaptive_prefill=bool(g.get("adaptive_prefill", False))), sequences_per_call
    held = max(1, sequences_per_call // shards)  # a shard's sequences at full length
    page = int(g.get("engine_page_size", 16))
    pages = 1 + held * -(-max_cache_length // page)
    slots = int(g.get("engine_slots", 0)) or held * shards
    return Engine(model, mesh=mesh, pad_id=pad_id, max_cache_length=max_cache_length, page_size=page,
                  num_pages=pages, max_slots=slots, weights_dtype=str(cfg.model.dtype),
                  decode_steps=int(g.get("engine_decode_steps", 0)) or default_decode_steps(platform)), 0


def policy_config(cfg):
    """The policy's ModelConfig read without loading weights (None when only loading can tell: GGUF files,
    known model names)."""
    from common.checkpoint.orbax_io import is_checkpoint_dir
    from common.config import ModelConfig

    m = cfg.model
    if m.init == "random":
        return get_preset(m.preset)
    path = Path(str(m.path))
    if is_checkpoint_dir(path):
        return ModelConfig.from_json((path / "model_config.json").read_text())
    if (path / "config.json").exists():
        return ModelConfig.from_hf_json(path)
    return None


def check_mesh_preset(cfg) -> None:
    """When the config names a slice (`mesh_preset`, see common/mesh_presets.py), fails before any work
    if the run's memory does not fit its chips (analytic estimate; `tools/memory_plan.py` compiles)."""
    name = cfg.get("mesh_preset", "")
    if not name:
        return
    model_config = policy_config(cfg)
    if model_config is None:
        raise ValueError(f"mesh_preset={name!r} needs a model whose config can be read before loading "
                         f"(an HF or checkpoint directory, or model.init='random'); got {cfg.model.path!r}")
    from common.aot.fits import check_fits
    from common.mesh_presets import get_mesh_preset

    preset = get_mesh_preset(name)
    degrees = tuple(int(cfg.mesh.get(a, 1)) for a in ("data", "fsdp", "tensor"))
    if -1 in degrees:
        known = int(np.prod([d for d in degrees if d != -1]))
        degrees = tuple(preset.num_devices // known if d == -1 else d for d in degrees)
    check_micro_batch(cfg.grpo, degrees[0] * degrees[1])
    per_call, _ = sequences_per_call(cfg, model_config, degrees, preset.hbm_bytes)  # as the trainer on this slice
    check_fits(model_config, degrees, job_shape(cfg, degrees=degrees), hbm_bytes=preset.hbm_bytes,
               num_devices=preset.num_devices, sequences_per_call=per_call,
               label=f"{name} ({preset.num_devices} x {preset.hbm_bytes / 2**30:.0f} GiB)")
