"""A tiny random decoder on the copy task ('What is 7?' -> 7, synthetic level 0) with a character tokenizer:
under a second per step on a CPU. For tests and smoke runs; the learning rate is high enough that the reward
rises within ~20 steps."""

from rl_scaling.grpo.defaults import default_config


def get_config():
    c = default_config()
    c.num_steps = 40
    c.model.init = "random"
    c.model.preset = "tiny"
    c.model.tokenizer = "char:0123456789+=? Whatis"  # 25 ids: a first guess is right 1 time in ~20
    c.data.synthetic_level = 0
    c.data.synthetic_size = 512
    c.data.heldout_size = 16
    c.data.template = "plain"
    c.data.chat = False
    c.data.max_prompt_len = 64
    c.grpo.prompts_per_step = 16
    c.grpo.group_size = 8
    c.grpo.mini_batch_prompts = 4
    c.grpo.micro_batch_size = 16
    c.grpo.max_response_len = 1  # the answer digit
    c.grpo.kl_coef = 0.0
    c.optim.lr = 3e-3
    c.optim.weight_decay = 0.0
    c.eval.every = 0
    c.eval.num_samples = 2
    c.eval.temperature = 1.0
    c.checkpoint.every = 5
    return c
