"""Time per GRPO step of our trainer against TRL's `GRPOTrainer`: same model, batch, lengths, loss, run, machine.

    python tools/bench_grpo.py                       # SmolLM2-135M-Instruct, 1 warm-up + 1 timed step each
    python tools/bench_grpo.py --warmup 2 --steps 3 --out docs/benchmarks.md
    python tools/bench_grpo.py --skip-trl            # ours only (phase breakdown)

One step of the default size takes 2-10 minutes on 2 shared CPU cores, so the default is 1 + 1 steps per trainer
(~10-40 minutes in all, depending on the load).

Setting (both trainers): 8 prompts x G = 8 samples, at most 128 new tokens (temperature 1, stop at the end
token), synthetic arithmetic level 1 with the chat template, the same prompts in the same order, the binary
correctness reward (`rl_scaling.rewards.compute_rewards`, math-verify), group-normalised advantages (mean and
std), clipped ratio eps 0.2, k3 KL to a frozen reference with coefficient 0.001 (both compute a reference forward
pass), token-mean aggregation over the whole 64-sequence batch (TRL `loss_type="dapo"`: normalised by the active
tokens of the accumulated batch; TRL's "bnpo" would normalise per micro-batch, "grpo" per sequence), ONE AdamW update
per step (lr 1e-6, weight decay 0.1, clip 1.0) accumulated over 8 micro-batches of 8 sequences (TRL
`per_device_train_batch_size=8, gradient_accumulation_steps=8, num_iterations=1`), float32 on CPU, no activation
recomputation (TRL's default `gradient_checkpointing=True` is switched off, as our `model.remat` is).
Old-policy log-probs: with one update per step TRL skips that forward pass (ratio = 1 by construction), so ours
takes the sampler's log-probs by default (`--old-logprobs recompute` adds the extra forward pass).

Timed: wall time of each step after `--warmup` steps (JAX compiles during the first; TRL warms up torch).
Tokens/s = (prompt + completion tokens of the step's 64 sequences) / step time; responses are sampled, so
lengths differ between the two trainers and between steps (mean response length is in the table).
FLOP/s share: useful FLOPs per step = 8 * N * tokens (6 N for the update, 2 N for the rollout; N = all
parameters, the tied LM head counted once; attention, the reference pass and padding not counted), over the
measured peak float32 matmul rate of this machine (best of numpy and jax, 2048^3 matmuls).
Writes a markdown table (stdout, and --out FILE appends it).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import CompileClock, load_average, machine, write_table  # beside this script


@dataclasses.dataclass(frozen=True)
class BenchShape:
    """The batch of one step: `prompts` x `group` sequences of <= `new_tokens` response tokens, one optimiser
    update accumulated over micro-batches of `micro_batch` sequences."""

    prompts: int = 8
    group: int = 8
    new_tokens: int = 128
    micro_batch: int = 8

    @property
    def sequences(self) -> int:
        return self.prompts * self.group

    def __post_init__(self):
        if min(self.prompts, self.new_tokens, self.micro_batch) < 1 or self.group < 2:
            raise ValueError(f"{self}: every size must be >= 1 and the group >= 2")
        if self.sequences % self.micro_batch:
            raise ValueError(f"{self}: {self.sequences} sequences do not split into micro-batches of "
                             f"{self.micro_batch}")


def peak_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul rate in GFLOP/s (2 n^3 FLOPs per product) of numpy and jax on this machine."""
    import jax
    import jax.numpy as jnp

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    jax_matmul = jax.jit(jnp.matmul)
    ja = jnp.asarray(a)
    runs = {"numpy": lambda: a @ a, "jax": lambda: jax_matmul(ja, ja).block_until_ready()}
    best = float("inf")
    for run in runs.values():
        run()
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def step_flops(n_params: int, tokens: float) -> float:
    """Useful FLOPs of one GRPO step: 6 N per token for the update and 2 N per token for the rollout."""
    return 8.0 * n_params * tokens


def grpo_bench_config(model: str, shape: BenchShape, kl_coef: float, old_logprobs: str, num_steps: int,
                      seed: int = 0):
    """The default GRPO config narrowed to the benchmark setting (one optimiser update per step)."""
    from rl_scaling.grpo.defaults import default_config

    c = default_config()
    c.seed = seed
    c.num_steps = num_steps
    c.model.path = model
    c.data.source = "synthetic"
    c.data.synthetic_level = 1
    c.data.synthetic_size = 512
    c.data.heldout_size = 16
    c.data.chat = True
    c.grpo.prompts_per_step = shape.prompts
    c.grpo.group_size = shape.group
    c.grpo.mini_batch_prompts = shape.prompts  # one optimiser update per step
    c.grpo.micro_batch_size = shape.micro_batch
    c.grpo.max_response_len = shape.new_tokens
    c.grpo.kl_coef = kl_coef
    c.grpo.aggregation = "token-mean"
    c.grpo.old_logprobs = old_logprobs
    c.eval.every = 0
    c.checkpoint.every = 0
    return c


def run_ours(cfg, warmup: int, steps: int, workdir: str) -> dict:
    """Drives `GRPOTrainer.train_step` directly; returns per-timed-step metrics and the warm-up cost."""
    from rl_scaling.grpo.trainer import GRPOTrainer

    clock = CompileClock()
    trainer = GRPOTrainer(cfg, workdir)
    clock.reset()
    warm_times, timed, compile_in_warmup, compile_in_timed = [], [], 0.0, 0.0
    for i in range(warmup + steps):
        t = time.perf_counter()
        m = trainer.train_step()
        wall = time.perf_counter() - t
        compiled = clock.reset()
        m["wall"] = wall
        print(f"ours step {i + 1}: {wall:.1f}s ({compiled:.1f}s compiling), {m['tokens/step']:.0f} tokens, "
              f"response {m['response/length_mean']:.0f} tokens, reward {m['reward/mean']:.2f}", flush=True)
        if i < warmup:
            warm_times.append(wall)
            compile_in_warmup += compiled
        else:
            timed.append(m)
            compile_in_timed += compiled
    import jax
    from flax import nnx

    n_params = sum(x.size for x in jax.tree.leaves(trainer.params.filter(nnx.Param)))
    problems = trainer.train_set.problems[:(warmup + steps) * cfg.grpo.prompts_per_step]
    prompt_ids = [trainer.ids_of[p.id] for p in problems]
    return {"timed": timed, "warm_times": warm_times, "compile_in_warmup": compile_in_warmup,
            "compile_in_timed": compile_in_timed, "n_params": int(n_params), "problems": problems,
            "prompt_ids": prompt_ids, "tokenizer": trainer.tokenizer, "template": cfg.data.template}


def summarise_ours(result: dict) -> dict:
    timed = result["timed"]
    mean = lambda key: statistics.mean(m[key] for m in timed)  # noqa: E731
    step_s = mean("wall")
    return {"step_s": step_s, "tokens": mean("tokens/step"), "response_len": mean("response/length_mean"),
            "rollout": mean("time/rollout"), "reward": mean("time/reward"), "logprobs": mean("time/logprobs"),
            "update": mean("time/update"), "first_step_s": result["warm_times"][0],
            "compile_s": result["compile_in_warmup"], "compile_in_timed": result["compile_in_timed"]}


class PhaseTimer:
    """Wraps methods of one object to add their wall time (seconds) into `totals[name]`."""

    def __init__(self, obj, names: dict[str, str]):
        self.totals = {label: 0.0 for label in names.values()}
        for method, label in names.items():
            setattr(obj, method, self._timed(getattr(obj, method), label))

    def _timed(self, fn, label):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[label] += time.perf_counter() - t
        return wrapper

    def take(self) -> dict[str, float]:
        out = dict(self.totals)
        for k in self.totals:
            self.totals[k] = 0.0
        return out


def trl_reward(prompts, completions, reference, **kwargs) -> list[float]:
    """Our correctness reward in TRL's reward-function signature (one float per completion)."""
    from rl_scaling.rewards import compute_rewards

    return compute_rewards(list(completions), list(reference), {"correctness": 1.0}).tolist()


def run_trl(model_dir: str, prompt_texts: list[str], references: list[str], shape: BenchShape, warmup: int,
            steps: int, kl_coef: float, cfg, workdir: str) -> list[dict]:
    """TRL's GRPOTrainer on the same prompts (in order), returns per-timed-step wall time, tokens, phases."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    o = cfg.optim
    args = GRPOConfig(
        output_dir=workdir, report_to="none", save_strategy="no", use_cpu=True, bf16=False,
        gradient_checkpointing=cfg.model.remat, seed=cfg.seed, disable_tqdm=True, logging_steps=1,
        dataloader_num_workers=0, max_steps=warmup + steps, shuffle_dataset=False, remove_unused_columns=False,
        per_device_train_batch_size=shape.micro_batch,
        gradient_accumulation_steps=shape.sequences // shape.micro_batch,
        num_generations=shape.group, num_iterations=1, max_completion_length=shape.new_tokens,
        temperature=cfg.grpo.temperature, top_p=cfg.grpo.top_p, top_k=cfg.grpo.top_k,
        beta=kl_coef, loss_type="dapo", epsilon=cfg.grpo.eps_low, epsilon_high=cfg.grpo.eps_high,
        scale_rewards="group", learning_rate=o.lr, weight_decay=o.weight_decay, max_grad_norm=o.grad_clip,
        adam_beta1=o.b1, adam_beta2=o.b2, adam_epsilon=1e-8, lr_scheduler_type="constant", warmup_steps=0)
    model_dir = hf_dir_for_trl(model_dir, workdir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    data = Dataset.from_dict({"prompt": prompt_texts, "reference": references})
    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward, args=args, train_dataset=data,
                          processing_class=tokenizer)
    phases = PhaseTimer(trainer, {"_generate": "rollout", "_calculate_rewards": "reward",
                                  "_generate_and_score_completions": "prepare"})
    records: list[dict] = []
    # TRL's own rule (GRPOTrainer._generate_and_score_completions) for running the old-policy forward pass.
    old_pass = args.gradient_accumulation_steps % (args.steps_per_generation * trainer.num_iterations) != 0
    print(f"TRL: {args.generation_batch_size} sequences generated per step, {args.steps_per_generation} "
          f"micro-batches per update, old log-probs pass: {old_pass}", flush=True)

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t, self.tokens = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            p = phases.take()
            rec = {"wall": now - self.t, "tokens": state.num_input_tokens_seen - self.tokens,
                   "rollout": p["rollout"], "reward": p["reward"],
                   "logprobs": p["prepare"] - p["rollout"] - p["reward"]}
            rec["update"] = rec["wall"] - p["prepare"]
            records.append(rec)
            print(f"TRL step {len(records)}: {rec['wall']:.1f}s, {rec['tokens']:.0f} tokens "
                  f"(rollout {rec['rollout']:.1f}s, reward {rec['reward']:.2f}s, log-probs {rec['logprobs']:.1f}s, "
                  f"update {rec['update']:.1f}s)", flush=True)
            self.t, self.tokens = time.perf_counter(), state.num_input_tokens_seen

    trainer.remove_callback(PrinterCallback)  # its per-step dicts would bury the timings
    trainer.add_callback(StepClock())
    trainer.train()
    return records[warmup:]


def summarise_trl(records: list[dict], prompt_tokens: float, sequences: int) -> dict:
    """Means over timed steps; `prompt_tokens` per step (the same prompts as ours) gives the response length."""
    mean = lambda key: statistics.mean(r[key] for r in records)  # noqa: E731
    tokens = mean("tokens")
    return {"step_s": mean("wall"), "tokens": tokens, "response_len": (tokens - prompt_tokens) / sequences,
            "rollout": mean("rollout"), "reward": mean("reward"), "logprobs": mean("logprobs"),
            "update": mean("update")}


def hf_dir_for_trl(model_dir: str, workdir: str) -> str:
    """`model_dir` as TRL can load it: TRL picks the model class from config.json's "architectures", which our
    GGUF conversion leaves out, so this writes a copy of config.json that names it and links the other files."""
    import json

    src = Path(model_dir)
    config = json.loads((src / "config.json").read_text())
    if config.get("architectures"):
        return model_dir
    known = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
    if config.get("model_type") not in known:
        raise ValueError(f"{src / 'config.json'}: no 'architectures' and unknown model_type "
                         f"{config.get('model_type')!r}; known: {sorted(known)}")
    dst = Path(workdir) / src.name
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "config.json" and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f.resolve())
    (dst / "config.json").write_text(json.dumps({**config, "architectures": [known[config["model_type"]]]}, indent=2))
    return str(dst)


def check_same_prompt_ids(model_dir: str, prompt_texts: list[str], our_ids: list[list[int]]) -> None:
    """TRL tokenises the rendered prompt text itself; it must give the token ids our trainer uses."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    for i, (text, ids) in enumerate(zip(prompt_texts, our_ids)):
        theirs = tok(text)["input_ids"]
        if list(theirs) != list(ids):
            raise RuntimeError(f"prompt {i}: TRL would see {len(theirs)} tokens, our trainer {len(ids)}; "
                               "the two runs would not train on the same input")


def markdown_table(argv, args, shape: BenchShape, peak, n_params, ours, trl, load, torch_threads) -> str:
    import jax

    rows = [("ours (JAX)", ours)] + ([("TRL GRPOTrainer (torch)", trl)] if trl else [])
    header = (f"\n### GRPO step time: ours vs TRL — {datetime.date.today()}\n\n"
              f"`{' '.join(['python tools/bench_grpo.py', *argv])}`  \n"
              f"Machine: {machine()}, load average {load}, peak float32 matmul "
              f"{peak:.0f} GFLOP/s; jax {jax.__version__} ({jax.default_backend()}), torch threads {torch_threads}.  \n"
              f"Model {args.model} (N = {n_params / 1e6:.1f}M), {shape.prompts} prompts x G={shape.group}, "
              f"<= {shape.new_tokens} new tokens, k3 KL {args.kl}, token-mean (TRL loss_type=dapo), 1 update/step "
              f"over {shape.micro_batch}-sequence micro-batches, our old log-probs: {args.old_logprobs}; mean of "
              f"{args.steps} step(s) after {args.warmup} warm-up step(s) each. Our JAX compile time (warm-up): "
              f"{ours['compile_s']:.1f}s; first step {ours['first_step_s']:.1f}s; compiling inside timed steps: "
              f"{ours['compile_in_timed']:.1f}s.\n\n"
              "| trainer | s/step | tokens/step | tokens/s | rollout s | reward s | log-probs s | update s "
              "| share of peak FLOP/s |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for name, r in rows:
        rate = r["tokens"] / r["step_s"]
        share = step_flops(n_params, r["tokens"]) / r["step_s"] / (peak * 1e9)
        lines.append(f"| {name} | {r['step_s']:.1f} | {r['tokens']:.0f} | {rate:.0f} | {r['rollout']:.1f} | "
                     f"{r['reward']:.2f} | {r['logprobs']:.1f} | {r['update']:.1f} | {100 * share:.1f}% |\n")
    footer = ""
    if trl:
        speed = (ours["tokens"] / ours["step_s"]) / (trl["tokens"] / trl["step_s"])
        footer = (f"\nRatio ours/TRL: {speed:.2f}x in tokens/s, {trl['step_s'] / ours['step_s']:.2f}x in time per "
                  f"step (goal >= 2x). Mean response length (timed steps): ours {ours['response_len']:.0f}, "
                  f"TRL {trl['response_len']:.0f} tokens.\n")
    return header + "".join(lines) + footer


def missing_peer_modules() -> list[str]:
    """The modules TRL's side of the benchmark imports that this environment lacks (the `bench` extra has them),
    checked before our side runs for minutes."""
    import importlib.util

    return [name for name in ("trl", "datasets", "accelerate") if importlib.util.find_spec(name) is None]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt (G)")
    parser.add_argument("--new-tokens", type=int, default=128, help="most response tokens")
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per gradient-accumulation step")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per trainer")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per trainer")
    parser.add_argument("--kl", type=float, default=0.001, help="k3 KL coefficient (both trainers)")
    parser.add_argument("--old-logprobs", choices=("sampler", "recompute"), default="sampler")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1 (the first step compiles)")
    try:
        shape = BenchShape(args.prompts, args.group, args.new_tokens, args.micro_batch)
    except ValueError as e:
        parser.error(str(e))
    if not args.skip_trl and (missing := missing_peer_modules()):
        parser.error(f"the peer needs {', '.join(missing)}, not installed: pip install -e '.[bench]' "
                     "(or --skip-trl to time ours alone)")

    import torch

    from common.api import resolve_model_path
    from rl_scaling.data import render_prompt

    model_dir = str(resolve_model_path(args.model))
    peak = peak_matmul_gflops()
    print(f"peak float32 matmul: {peak:.0f} GFLOP/s", flush=True)
    cfg = grpo_bench_config(args.model, shape, args.kl, args.old_logprobs, args.warmup + args.steps)
    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as workdir:
        result = run_ours(cfg, args.warmup, args.steps, workdir)
    ours = summarise_ours(result)
    trl = None
    if not args.skip_trl:
        tok = result["tokenizer"]
        chat = lambda msgs: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # noqa: E731
        texts = [render_prompt(p, result["template"], chat) for p in result["problems"]]
        check_same_prompt_ids(model_dir, texts, result["prompt_ids"])
        with tempfile.TemporaryDirectory(prefix="bench_trl_") as workdir:
            records = run_trl(model_dir, texts, [str(p.reference) for p in result["problems"]], shape,
                              args.warmup, args.steps, args.kl, cfg, workdir)
        timed_prompts = result["prompt_ids"][args.warmup * shape.prompts:]
        trl = summarise_trl(records, shape.group * sum(map(len, timed_prompts)) / args.steps, shape.sequences)
    table = markdown_table(argv, args, shape, peak, result["n_params"], ours, trl, load_average(),
                           torch.get_num_threads())
    write_table(table, args.out)


if __name__ == "__main__":
    main()
