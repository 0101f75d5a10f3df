"""The reduced miniature the test suite runs (~1.5 min): 3 very small sizes, a short pretraining,
4 GRPO steps with evaluations at steps 2 and 4, and the reuse arm on r1 at tau 1 and 4. It checks the
pipeline, not the science."""

import ml_collections

from rl_scaling.miniature.defaults import default_study_config


def _shape(d, f, layers):
    return {"hidden_size": d, "intermediate_size": f, "num_layers": layers, "num_heads": 2,
            "num_kv_heads": 1, "head_dim": d // 2}


def get_config():
    c = default_study_config()
    c.name = "miniature-reduced"
    c.corpus.size = 2_000
    c.corpus.wrong_answer_rate = 0.0
    c.pool.per_level = (50, 150)
    c.family = ml_collections.ConfigDict({"r1": _shape(16, 32, 1), "r2": _shape(24, 48, 1),
                                          "r3": _shape(32, 64, 2)})
    c.pretrain.steps = 150  # held-out pass@1 after it: ~0.1, 0.2, 0.3 from r1 to r3
    c.pretrain.batch_size = 32
    c.pretrain.lr = 1e-2
    c.pretrain.lr_reference_width = 0
    c.pretrain.warmup_steps = 5
    c.seeds = (0,)
    # 16 held-out problems x 4 samples = 64 sequences, the rollout batch (8 x 8): one sampler program.
    c.grpo_overrides = ml_collections.ConfigDict({
        "num_steps": 4, "data": {"heldout_size": 16}, "eval": {"every": 2, "num_samples": 4},
        "grpo": {"prompts_per_step": 8, "mini_batch_prompts": 4, "micro_batch_size": 32}})
    # The reuse arm on one size, two taus: 4 steps x 8 prompts = 32 samples, 32 or 8 distinct problems.
    c.reuse.taus = (1, 4)
    c.reuse.sizes = ("r1",)
    c.reuse.seeds = (0,)
    c.reuse.num_steps = 4
    return c
