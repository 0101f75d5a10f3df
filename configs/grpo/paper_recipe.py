"""The RL scaling study's recipe (../shared/spec/rl_scaling.md), the same hyper-parameters for every size.

Per-size files (`qwen2_5_7b.py`, ...) call `recipe(size, arg)`. `arg` is what follows the colon on the
command line: `--config=configs/grpo/qwen2_5_7b.py:tpu,instruct` (hardware `tpu` | `gpu`, variant `base` |
`instruct`). The data set is yours to point at: a .parquet with `problem`, `answer` and `difficulty` or
`pass_rate` columns (`--config.data.source=/path/problems.parquet`); GSM8K's train split is the offline
stand-in.
"""

from configs.grpo import base

# Tensor-parallel degree per size on a pod slice: enough to split the KV heads' work and keep each chip's
# share of a 72B model in memory; the rest of the slice is fsdp.
TENSOR_ON_POD = {"0_5b": 1, "1_5b": 1, "3b": 1, "7b": 1, "14b": 2, "32b": 4, "72b": 8}
# Sequences per gradient-accumulation micro-batch (responses up to 4096 tokens).
MICRO_BATCH = {"0_5b": 16, "1_5b": 16, "3b": 8, "7b": 8, "14b": 4, "32b": 4, "72b": 2}


def parse_arg(arg: str) -> tuple[str, str]:
    parts = [p for p in (arg or "tpu,instruct").split(",") if p]
    hardware = next((p for p in parts if p in ("tpu", "gpu")), "tpu")
    variant = next((p for p in parts if p in ("base", "instruct")), "instruct")
    unknown = set(parts) - {"tpu", "gpu", "base", "instruct"}
    if unknown:
        raise ValueError(f"unknown config argument(s) {sorted(unknown)}; use tpu|gpu and base|instruct")
    return hardware, variant


def recipe(size: str, arg: str = ""):
    hardware, variant = parse_arg(arg)
    c = base.get_config()
    c.num_steps = 0  # one epoch of the data stream (~105 steps on the paper's 54k problems)
    name = size.replace("_", ".").upper()
    c.model.path = f"checkpoints/Qwen2.5-{name}" + ("-Instruct" if variant == "instruct" else "")
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = True
    c.data.source = "gsm8k"
    c.data.heldout_size = 500
    c.data.curriculum = True
    c.data.chat = variant == "instruct"
    c.data.template = "step_by_step_boxed"
    c.data.max_prompt_len = 2048
    c.data.num_epochs = 1
    c.grpo.prompts_per_step = 512
    c.grpo.group_size = 8
    c.grpo.mini_batch_prompts = 128  # 4 optimiser updates per step
    c.grpo.micro_batch_size = MICRO_BATCH[size]
    c.grpo.max_response_len = 4096
    c.grpo.temperature = 1.0
    c.grpo.eps_low = c.grpo.eps_high = 0.2
    c.grpo.kl_coef = 0.001
    c.grpo.kl_estimator = "k3"
    c.grpo.aggregation = "token-mean"
    c.optim.lr = 1e-6
    c.optim.weight_decay = 0.1
    c.optim.grad_clip = 1.0
    c.optim.schedule = "constant"
    c.eval.every = 1
    c.eval.num_samples = 1
    c.eval.temperature = 0.7
    c.eval.downstream = "gsm8k,aime24,amc23,minerva_math"
    c.checkpoint.every = 5
    c.checkpoint.keep = 3
    if hardware == "tpu":
        c.mesh = {"data": 1, "fsdp": -1, "tensor": TENSOR_ON_POD[size]}
    else:  # one GPU host: fsdp over its GPUs
        c.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
    return c
