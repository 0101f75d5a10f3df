"""The miniature's GRPO recipe: ONE set of hyper-parameters for every size of the family.

The paper's algorithm (GRPO advantages, PPO clip 0.2 both sides, k3 KL to the initial policy at 0.001,
token-mean loss, 4 optimiser updates per step, AdamW with weight decay 0.1, clip 1.0, temperature 1.0,
held-out pass@1 at temperature 0.7), scaled down to a CPU: 32 prompts x 8 samples per step, short
responses, and a learning rate for models of 25k-1M parameters: 2e-4 after a 20-update warm-up. Without
the warm-up Adam's first, sign-like updates wreck the small pretrained models; at 5e-4 the two largest
sizes drift away (L rises); at 2e-4 the smallest still improves about as fast as at 5e-4. The study
(`tools/miniature.py`) sets `model.path` (each size's pretrained checkpoint) and `data.source` (the problem
table it wrote).
"""

from rl_scaling.grpo.defaults import default_config


def get_config():
    c = default_config()
    c.num_steps = 60
    c.model.init = "pretrained"
    c.model.path = ""  # set per run by the study: <out>/checkpoints/<size>
    c.model.tokenizer = ""  # the checkpoint's own (the sentencepiece tokenizer saved with it)
    c.data.source = ""  # set by the study: <out>/data/rl_pool.jsonl
    c.data.heldout_size = 128
    # The pool table has no difficulties on purpose (rl_scaling/miniature/corpus.py): training keeps its shuffled
    # order and the held-out split is a seeded random draw (the run warns that this is not the study's protocol).
    c.data.curriculum = False
    c.data.template = "plain"  # the bare question, as in the pretraining corpus
    c.data.chat = False
    c.data.max_prompt_len = 64
    c.data.num_epochs = 0  # cycle over the training problems
    c.grpo.prompts_per_step = 32
    c.grpo.group_size = 8
    c.grpo.mini_batch_prompts = 8  # 4 optimiser updates per step, as in the paper (512 / 128)
    c.grpo.micro_batch_size = 64
    c.grpo.max_response_len = 16  # 'The answer is \boxed{123}.' + eos is 11 tokens
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 20  # optimiser updates (5 GRPO steps)
    c.eval.every = 5
    c.eval.num_samples = 4  # 128 problems x 4 samples: standard error of pass@1 ~0.02
    c.eval.temperature = 0.7
    c.checkpoint.every = 0  # only the final step (and on preemption)
    c.checkpoint.keep = 1
    c.log_every = 1
    return c
