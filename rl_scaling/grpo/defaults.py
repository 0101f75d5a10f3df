"""Every GRPO setting with its default, and the RL scaling study's recipe: what config files start from.

`default_config()` is the record of what a run can change; `configs/grpo/*.py` start from it and change
what differs, and `--config.<key>=<value>` overrides on the command line (e.g.
`--config.grpo.group_size=16`). `paper_recipe(size, arg)` is the study's recipe (../shared/spec/rl_scaling.md),
the same hyper-parameters for every Qwen2.5 size, laid out as `common.mesh_presets` plans that size.
"""

from __future__ import annotations

import ml_collections

from common.mesh_presets import RECOMMENDED, layout
from common.platform_flags import default_compute_dtype
from rl_scaling.grpo.chunked_logprobs import DEFAULT_LOGPROB_CHUNK

# The slice a "gpu" recipe is laid out for: one 8-GPU host.
GPU_HOST = "8xh100"


def default_config() -> ml_collections.ConfigDict:
    """Every GRPO setting with its default."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_steps = 100  # 0 = one pass over the data stream

    c.model = ml_collections.ConfigDict()
    c.model.path = "smollm2-135m-instruct"  # HF dir, GGUF file, our checkpoint dir, or a known name
    c.model.init = "pretrained"  # "pretrained" | "random" (a fresh decoder from model.preset)
    c.model.preset = ""  # common.config preset for init="random" (e.g. "tiny")
    c.model.tokenizer = ""  # "" = the checkpoint's; "char" = the character tokenizer (tiny models)
    c.model.dtype = default_compute_dtype()  # compute dtype: bfloat16 on GPU / TPU, float32 on CPU
    c.model.param_dtype = "float32"
    c.model.remat = False  # recompute activations in the backward pass (saves memory)
    c.model.attention = "auto"  # attention backend (common.attention): "auto", "xla", or a plugin such as "cpu"

    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})

    c.data = ml_collections.ConfigDict()
    # "synthetic" | a named set (gsm8k, aime24, ...: rl_scaling.data.DATASETS) | a .jsonl/.parquet table in the
    # plain, verl or Hugging Face layout (docs/data.md)
    c.data.source = "synthetic"
    c.data.split = "train"
    c.data.synthetic_level = 1
    c.data.synthetic_size = 4096
    c.data.prompt_wrapper = "strip"  # a table's prompt: "strip" its instructions (the template adds ours) | "keep"
    c.data.pass_rate_column = ""  # a column or verl extra_info key, e.g. "qwen2.5_7b_pass_rate"; difficulty = 1 - it
    c.data.difficulty_column = ""  # a column or extra_info key holding the difficulty (higher = harder)
    c.data.heldout_size = 64  # balanced easy/hard when the problems have difficulties (the study's protocol)
    c.data.curriculum = True  # easy-to-hard order, never shuffled; needs difficulties: without them an error
    c.data.without_difficulty = "error"  # with curriculum: "error" | "file_order" (file order, random held-out, warned)
    c.data.reuse_tau = 0  # > 0: a difficulty-stratified subset repeated tau times (data-reuse study)
    c.data.template = "step_by_step_boxed"  # rl_scaling/data/prompts.yaml
    c.data.chat = True  # apply the tokenizer's chat template
    c.data.max_prompt_len = 2048  # longer prompts are dropped (and counted)
    c.data.num_epochs = 0  # 0 = repeat the stream forever

    c.grpo = ml_collections.ConfigDict()
    c.grpo.prompts_per_step = 512
    c.grpo.group_size = 8
    c.grpo.mini_batch_prompts = 128  # prompts per optimiser update (PPO mini-batch)
    c.grpo.micro_batch_size = 8  # sequences per gradient-accumulation micro-batch, over the whole mesh
    c.grpo.max_response_len = 4096
    c.grpo.temperature = 1.0
    c.grpo.top_p = 1.0
    c.grpo.top_k = 0
    c.grpo.eps_low = 0.2
    c.grpo.eps_high = 0.2
    c.grpo.kl_coef = 0.001
    c.grpo.kl_estimator = "k3"
    c.grpo.aggregation = "token-mean"
    # The loss's optional guards (rl_scaling/grpo/policy_loss.py), off in the study's recipe:
    c.grpo.dual_clip = 0.0  # c > 1 caps a negative-advantage token's loss at c·|A| (Ye et al. 2020; 3 is usual)
    c.grpo.log_ratio_clamp = 0.0  # L > 0 clamps logp - old_logp to [-L, L] before exp (e.g. 20)
    # Response positions whose float32 logits [micro-batch, chunk, vocab] are alive at once when log-probs
    # are taken, forward and backward (rl_scaling/grpo/chunked_logprobs.py); 0 = all positions at once.
    c.grpo.logprob_chunk = DEFAULT_LOGPROB_CHUNK
    c.grpo.normalize_std = True
    c.grpo.mask_truncated = False
    c.grpo.old_logprobs = "recompute"  # "recompute" (a forward pass) | "sampler"
    # True: rollouts plan their prefill (common/prefill_plan.py): a prompt's G copies share its prefill,
    # prompts of other lengths go in their own groups. Less prefill compute, more compiled shapes; the
    # memory plan (tools/memory_plan.py) compiles the one-program path that False always takes.
    c.grpo.adaptive_prefill = False
    # What generates rollouts (rl_scaling/grpo/setup.py make_rollout): "paged" = the engine (common/engine:
    # continuous batching over a paged KV cache; a finished sequence's slot and pages go to the next one),
    # "static" = the sampler (each call decodes until its longest sequence ends), "auto" = paged on GPU / TPU,
    # static on CPU (where the CPU decode kernels make the static sampler's steps faster).
    c.grpo.rollout_engine = "auto"
    c.grpo.engine_page_size = 16  # tokens per page of the engine's KV cache
    c.grpo.engine_slots = 0  # sequences decoding at once; 0 = what the rollout memory holds at full length
    c.grpo.engine_decode_steps = 0  # decode steps a host round trip; 0 = 1 on a CPU, 4 on an accelerator
    # Work and memory per device (rl_scaling/grpo/setup.py):
    c.grpo.micro_batch_per_device = 0  # with micro_batch_size=0: sequences per data x fsdp batch shard
    c.grpo.rollout_batch = 0  # sequences per sampler call; 0 = as many as the device memory holds (common/aot/fits.py)
    c.grpo.rollout_memory_gib = 0.0  # device memory those calls are planned for; 0 = the device's (CPU: none, one call)
    c.grpo.reference_dtype = ""  # the KL reference copy's dtype: "" = model.param_dtype, "bfloat16", "float32"
    c.grpo.reference_on_host = False  # keep the reference in host memory between uses (where the platform has it)
    c.grpo.min_length_bucket = 16  # packed prompt / response lengths: this x 2^k, so few update programs compile
    # "halves": also this x 1.5 x 2^k (16, 24, 32, 48, ...): padding under a third instead of half of a packed
    # length, for twice the update programs; "pow2": this x 2^k only (the recipe: its compiles take minutes).
    # SmolLM2's chat prompts of ~70 tokens pad to 96 instead of 128: a GRPO step 12 % shorter on the CPU.
    c.grpo.length_ladder = "halves"

    c.reward = ml_collections.ConfigDict({"correctness": 1.0})  # reward name -> weight
    c.reward_timeout_s = 5.0

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-6
    c.optim.weight_decay = 0.1
    c.optim.grad_clip = 1.0
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 10  # steps; 0 = only before and after training
    c.eval.num_samples = 1  # pass@1 averaged over this many samples per problem
    c.eval.temperature = 0.7
    c.eval.max_new_tokens = 0  # 0 = grpo.max_response_len
    c.eval.downstream = ""  # comma-separated named sets (rl_scaling.data.DATASETS) or files evaluated at the end
    c.eval.downstream_missing = "error"  # a downstream set without its file: "error" (at start) | "skip" (warned)
    c.eval.downstream_limit = 0  # problems per downstream set; 0 = all

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 10
    c.checkpoint.keep = 2
    c.log_every = 1
    return c


def parse_recipe_arg(arg: str) -> tuple[str, str]:
    """(hardware, variant) of a recipe argument "tpu|gpu,base|instruct" (default "tpu,instruct")."""
    parts = [p for p in (arg or "tpu,instruct").split(",") if p]
    hardware = next((p for p in parts if p in ("tpu", "gpu")), "tpu")
    variant = next((p for p in parts if p in ("base", "instruct")), "instruct")
    unknown = set(parts) - {"tpu", "gpu", "base", "instruct"}
    if unknown:
        raise ValueError(f"unknown config argument(s) {sorted(unknown)}; use tpu|gpu and base|instruct")
    return hardware, variant


def paper_recipe(size: str, arg: str = "") -> ml_collections.ConfigDict:
    """The study's recipe for Qwen2.5 `size` (a `common.mesh_presets.SIZES` name, e.g. "qwen2_5_7b").

    `arg` is what follows the colon of `--config=configs/grpo/qwen2_5_7b.py:tpu,instruct`: hardware `tpu`
    (laid out for the size's planned slice, `common.mesh_presets.RECOMMENDED`) or `gpu` (one 8-GPU host),
    and variant `base` or `instruct`. fsdp stays -1 (the rest of whatever slice runs it); tensor degree,
    micro-batch and remat come from the layout. The data set is yours to point at: a table with difficulties
    (`--config.data.source=/path/problems.parquet`, a verl table with `--config.data.pass_rate_column=...`;
    docs/data.md) gets the study's curriculum and balanced held-out split. GSM8K's train split is the offline
    stand-in; it has no difficulties, so it trains in file order with a seeded random held-out split, and the
    run warns at start (`data.without_difficulty = "file_order"`). Downstream sets whose files are not under
    the data root (MATH-500 is not shipped) are skipped with a warning naming the expected path.
    """
    hardware, variant = parse_recipe_arg(arg)
    plan = layout(RECOMMENDED[size] if hardware == "tpu" else GPU_HOST, size)
    # The defaults are the paper's algorithm and batch: 512 prompts x G=8 per step, 4 optimiser updates of
    # 128 prompts, responses up to 4096 tokens, PPO clip 0.2, k3 KL at 0.001, token-mean loss, AdamW at a
    # constant 1e-6 (weight decay 0.1, clip 1.0). The recipe adds the model, data, evaluation and layout.
    c = default_config()
    c.num_steps = 0  # one epoch of the data stream (~105 steps on the paper's 54k problems)
    name = size.removeprefix("qwen2_5_").replace("_", ".").upper()
    c.model.path = f"checkpoints/Qwen2.5-{name}" + ("-Instruct" if variant == "instruct" else "")
    c.model.dtype = "bfloat16"
    c.model.remat = plan.remat
    c.mesh = {"data": 1, "fsdp": -1, "tensor": plan.tensor}
    c.grpo.micro_batch_size = 0  # from the per-device count: the same recipe splits over any slice
    c.grpo.micro_batch_per_device = plan.per_device_micro_batch
    c.grpo.reference_dtype = "bfloat16"
    c.grpo.min_length_bucket = 128  # prompts up to 2048 and responses up to 4096: at most 5 x 6 shapes
    c.grpo.length_ladder = "pow2"
    c.data.source = "gsm8k"
    c.data.heldout_size = 500  # balanced between easy and hard when the source has difficulties
    # The study trains in curriculum order, which needs difficulties. GSM8K, the default source, has none: it then
    # trains in file order with a random held-out split, and the run says so at start. A table with pass rates
    # gets the curriculum; "error" instead refuses a source without difficulties.
    c.data.without_difficulty = "file_order"
    c.data.chat = variant == "instruct"
    c.data.num_epochs = 1
    c.eval.every = 1
    c.eval.downstream = "gsm8k,math500,aime24,amc23,minerva_math"
    # MATH-500 is not in ../shared/data/math: put it at <data root>/math500/test.jsonl (docs/data.md); until then
    # it (or any other missing set) is skipped with a warning naming the path.
    c.eval.downstream_missing = "skip"
    c.checkpoint.every = 5
    c.checkpoint.keep = 3
    return c
