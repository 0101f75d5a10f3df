"""The settings of the CPU miniature of the RL scaling study (docs/miniature.md), at the full study's
values: 5 sizes, ~25k to ~1M non-embedding parameters (40x), pretrained briefly on synthetic arithmetic with
worked answers, then GRPO with one recipe. `configs/miniature/*.py` start from `default_study_config()`.
"""

from __future__ import annotations

import ml_collections


def _shape(d, f, layers, heads, kv, head_dim):
    return {"hidden_size": d, "intermediate_size": f, "num_layers": layers, "num_heads": heads,
            "num_kv_heads": kv, "head_dim": head_dim}


def default_study_config() -> ml_collections.ConfigDict:
    """Every setting of a miniature study, at the full study's values."""
    c = ml_collections.ConfigDict()
    c.name = "miniature"
    # rl_scaling.data.synthetic_arithmetic levels: 0 copy ('What is 7?'), 1 single-digit a + b.
    c.levels = (0, 1)

    c.corpus = ml_collections.ConfigDict()
    c.corpus.size = 20_000  # documents
    c.corpus.seed = 1
    # Noisy pretraining data: this share of worked answers is wrong (one digit changed), so a pretrained
    # model puts probability on wrong answers that RL can remove.
    c.corpus.wrong_answer_rate = 0.3
    # Levels whose held-out GRPO questions are removed from the corpus. Levels 0 and 1 are closed sets of
    # 10 and 100 questions (every question is also a training question), so none here.
    c.corpus.exclude_heldout_levels = ()

    # GRPO problems per level: level 0 gets 1 in 10, about its share of the 110 distinct questions, so no
    # single copy question weighs more than ~1 % of held-out L.
    c.pool = ml_collections.ConfigDict({"per_level": (200, 1800), "seed": 2})
    c.tokenizer = ml_collections.ConfigDict({"vocab_size": 64})

    # The family: (d, F, layers, heads, kv heads, head dim); N from 24.9k to 986k.
    c.family = ml_collections.ConfigDict({
        "s1": _shape(32, 96, 2, 4, 2, 8),
        "s2": _shape(48, 144, 2, 4, 2, 12),
        "s3": _shape(64, 192, 3, 4, 2, 16),
        "s4": _shape(96, 288, 4, 6, 2, 16),
        "s5": _shape(128, 384, 5, 8, 4, 16),
    })

    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.steps = 300
    c.pretrain.batch_size = 64
    c.pretrain.lr = 3e-3  # at hidden size lr_reference_width; lr * 64 / d for the others (1/width rule)
    c.pretrain.lr_reference_width = 64  # 0 = the same lr for every size
    c.pretrain.warmup_steps = 20
    c.pretrain.weight_decay = 0.0
    c.pretrain.loss_on = "answer"  # "answer" | "all"
    c.pretrain.seed = 0

    c.grid = "configs/miniature/grid.py"
    # GRPO seeds of every size (the pretrained checkpoints are shared); the fit averages L over seeds first.
    c.seeds = (0, 1, 2)
    c.grpo_config = "configs/miniature/grpo.py"
    c.grpo_overrides = ml_collections.ConfigDict()  # extra trainer overrides for every run

    # Finding 4, the data-reuse arm (configs/grids/data_reuse.py in miniature): every run trains on the same
    # num_steps x 32 prompts, a difficulty-stratified subset of num_steps x 32 / tau pool problems repeated tau
    # times in curriculum order (the trainer's data.reuse_tau; difficulty = the synthetic level, read from the
    # pool's `level` column), evaluated before and after; final L against tau per size. taus = () skips it.
    # Two sizes x 5 taus x 2 seeds = 20 runs of 40 steps: what the 30-minute budget leaves after the main grid.
    c.reuse = ml_collections.ConfigDict()
    c.reuse.taus = (1, 2, 4, 8, 16)
    c.reuse.sizes = ("s2", "s3")
    c.reuse.seeds = (0, 1)
    c.reuse.num_steps = 40  # 1,280 samples: tau = 16 trains on 80 pool problems; <= the 1,872 training problems
    c.reuse.difficulty_column = "level"

    c.fit = ml_collections.ConfigDict()
    c.fit.xs = ("C", "D")
    c.fit.protocols = ("full", "inter")
    c.fit.objective = "linear"
    c.fit.bootstrap = 50  # draws over seeds for the uncertainty of K_max and N_0 (0 = off; needs >= 2 seeds)
    return c
