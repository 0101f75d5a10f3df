"""PsySafe over the checkpoints of a SmolLM2 GRPO run (tools/psysafe_checkpoints.py): does RL on math change
susceptibility? The grid is the committed example's (docs/examples/cross_paper/), small enough for a CPU:

python tools/psysafe_checkpoints.py --config=configs/psysafe/grpo_checkpoints.py \
    --run_dir=runs/psysafe_cross_paper_grpo --base=smollm2-135m-instruct --out=runs/psysafe_cross_paper

The command replaces backend.model_path by each checkpoint in turn. The judge stays one model for every
checkpoint (here the untrained SmolLM2, which is no judge: point judge_backend at an endpoint for real
verdicts). For a real comparison raise tasks.limit_per_kind (or give a task file), rounds and the sampling
lengths (a questionnaire needs ~200 tokens to be answered in full).
"""

from agent_safety.run_config import default_config


def get_config():
    c = default_config()
    c.backend.kind = "jax"
    c.backend.model_path = ""  # set per checkpoint by the command
    c.backend.dtype = "float32"
    c.backend.max_batch = 16
    c.judge_backend.kind = "jax"
    c.judge_backend.model_path = "smollm2-135m-instruct"  # one judge for every step
    c.judge_backend.dtype = "float32"
    c.tasks.limit_per_kind = 1  # the builtin tasks: one safe, one dangerous
    c.attacks = ("none", "HI-Traits")  # on the default system (AutoGen-style chat), no defence
    c.rounds = 1
    c.agent_sampling.max_tokens = 48
    c.questionnaire_sampling.max_tokens = 96
    c.judge_sampling.max_tokens = 16
    c.batch_size = 16
    return c
