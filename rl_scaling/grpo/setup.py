"""Building what a GRPO run needs from its config: the policy, the tokenizer, and the prompt sets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from common import load_pretrained
from common.config import get_preset
from common.model import Decoder
from common.sharding import make_mesh, named_sharding
from common.tokenizer import char_tokenizer
from rl_scaling.data import (DATASETS, Problem, curriculum_order, heldout_split, load_problems, load_table,
                             render_prompt, reuse_subset, synthetic_arithmetic)


def build_mesh(cfg):
    shape = {k: int(v) for k, v in cfg.mesh.items()}
    if all(v in (1, -1) for v in shape.values()) and jax.device_count() == 1:
        return None
    return make_mesh(shape)


def build_policy(cfg, mesh):
    """(model, tokenizer) as the config says."""
    m = cfg.model
    tokenizer = None
    if m.tokenizer.startswith("char"):  # "char" or "char:<alphabet>"
        tokenizer = char_tokenizer(m.tokenizer[5:]) if m.tokenizer.startswith("char:") else char_tokenizer()
    if m.init == "random":
        if not m.preset:
            raise ValueError("model.init='random' needs model.preset (e.g. 'tiny')")
        model_cfg = get_preset(m.preset)
        if tokenizer is not None:  # a random model takes its vocabulary size from its tokenizer
            model_cfg = model_cfg.replace(vocab_size=len(tokenizer))
        model = Decoder(model_cfg, dtype=m.dtype, param_dtype=m.param_dtype, rngs=nnx.Rngs(cfg.seed))
        if mesh is not None:
            for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
                sharding = named_sharding(mesh, var.get_metadata()["logical_axes"], var.shape)
                var[...] = jax.device_put(var[...], sharding)
    elif m.init == "pretrained":
        model, own_tokenizer = load_pretrained(m.path, dtype=m.dtype, param_dtype=m.param_dtype, mesh=mesh)
        tokenizer = tokenizer or own_tokenizer
    else:
        raise KeyError(f"unknown model.init {m.init!r}; known: pretrained, random")
    if tokenizer is None:
        raise ValueError("a random model needs model.tokenizer (e.g. 'char')")
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} ids but the model's vocabulary is "
                         f"{model.config.vocab_size}")
    return model, tokenizer


def load_pool(cfg) -> list[Problem]:
    d = cfg.data
    if d.source == "synthetic":
        return synthetic_arithmetic(d.synthetic_size, d.synthetic_level, cfg.seed)
    if d.source in DATASETS:
        return load_problems(d.source, split=d.split)
    path = Path(d.source)
    if path.suffix in (".jsonl", ".parquet", ".json"):
        return load_table(path)
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


def split_train_heldout(cfg, pool: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    """Held-out split (balanced easy/hard when difficulties exist), curriculum order, reuse subset."""
    d = cfg.data
    has_difficulty = all(p.difficulty is not None for p in pool)
    if has_difficulty and len({p.difficulty for p in pool}) > 1:
        train, heldout = heldout_split(pool, d.heldout_size, cfg.seed)
    else:  # a deterministic split without difficulty strata
        order = np.random.default_rng(cfg.seed).permutation(len(pool))
        heldout = [pool[i] for i in sorted(order[:d.heldout_size])]
        train = [pool[i] for i in sorted(order[d.heldout_size:])]
    if d.curriculum and has_difficulty:
        train = curriculum_order(train)
    if d.reuse_tau:
        total = cfg.num_steps * cfg.grpo.prompts_per_step
        train = reuse_subset(train, total, d.reuse_tau, cfg.seed)
    return train, heldout
