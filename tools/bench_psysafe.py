"""PsySafe dialogues per hour: lockstep batched turns against one dialogue at a time, same backend, same run.

    python tools/bench_psysafe.py                          # SmolLM2-135M-Instruct, 16 dialogues, 1 round, 48 tokens
    python tools/bench_psysafe.py --dialogues 32 --rounds 2 --out docs/benchmarks.md

Workload: `--dialogues` (task, attack) pairs of the builtin tasks, half under each attack (none, and
HI-Traits: the dark-trait injection, a long system prompt that its dialogues share), on the AutoGen-style
system (planner, assistant: 2 agent turns per round), `--rounds` rounds, at most `--max-tokens` new tokens
per turn, greedy by default (so both modes generate the same text, up to float rounding), stop at the
end token. Side queries OFF in both modes: no questionnaire, and the judge is a constant scripted reply (no model
call); `--side-queries` turns both on, through the same model, identically in both modes.

Modes, on ONE `JaxBackend` (one model, one compiled-program cache):
  batched     `agent_safety.engine.run_dialogues` on all dialogues at once: every step is one `generate` call.
  sequential  `run_dialogues` on one dialogue at a time (batch 1).
Each mode first runs the whole workload once untimed (compiles every shape it meets), then once timed; the
workload is deterministic, so the timed run meets the same shapes. Reported: the untimed run's extra time
(compile + first-call overhead) and the JAX compile seconds that still fell inside the timed run.
Writes a markdown table (stdout, and --out FILE appends it).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Sequence

from agent_safety.backends.base import ChatBackend, ChatRequest, ChatResult
from bench_common import CompileClock, load_average, machine, write_table  # beside this script

ATTACKS = ("none", "HI-Traits")
SCRIPTED_VERDICT = "VERDICT: SAFE"


class CountingBackend(ChatBackend):
    """Delegates to `inner`; counts `complete_batch` calls, requests, prompt and generated tokens."""

    def __init__(self, inner: ChatBackend):
        self.inner = inner
        self.name = inner.name
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.requests = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def complete_batch(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        results = self.inner.complete_batch(requests)
        self.calls += 1
        self.requests += len(requests)
        self.prompt_tokens += sum(r.prompt_tokens for r in results)
        self.completion_tokens += sum(r.completion_tokens for r in results)
        return results


def workload_config(num_dialogues: int, rounds: int, max_tokens: int, temperature: float, side_queries: bool):
    """`agent_safety.run_config.default_config()` narrowed to the benchmark workload."""
    from agent_safety.run_config import default_config

    c = default_config()
    c.systems = ("autogen",)
    c.attacks = ATTACKS
    c.defences = ("none",)
    c.rounds = rounds
    c.seeds = (0,)
    c.agent_sampling.max_tokens = max_tokens
    c.agent_sampling.temperature = temperature
    c.questionnaire_every_turn = side_queries
    c.questionnaire_sampling.max_tokens = max_tokens
    c.judge_sampling.max_tokens = max_tokens
    c.batch_size = num_dialogues
    return c


def make_dialogues(config, num_dialogues: int):
    """Fresh `Dialogue`s: builtin tasks x systems x attacks of `config`, the same number under every attack
    (as in an experiment that compares attacks), `num_dialogues` in all."""
    from agent_safety.dialogue import build_dialogue
    from agent_safety.run import experiment_grid
    from agent_safety.tasks import load_tasks

    grid = experiment_grid(config, load_tasks("builtin"))
    per_attack = -(-num_dialogues // len(config.attacks))
    picked, taken = [], {attack: 0 for attack in config.attacks}
    for key, task, spec in grid:
        if len(picked) < num_dialogues and taken[key.attack] < per_attack:
            taken[key.attack] += 1
            picked.append((key, task, spec))
    if len(picked) < num_dialogues:
        raise ValueError(f"--dialogues {num_dialogues}: the builtin tasks give only {len(picked)} dialogues "
                         f"with at most {per_attack} per attack")
    return [build_dialogue(key, task, spec, config.rounds, config.trait_vector) for key, task, spec in picked]


def run_mode(mode: str, config, num_dialogues: int, agents: ChatBackend, judge: ChatBackend) -> float:
    """Runs the workload in `mode` ("batched" | "sequential"); returns wall seconds."""
    from agent_safety.engine import run_dialogues
    from agent_safety.run import engine_settings

    dialogues = make_dialogues(config, num_dialogues)
    settings = engine_settings(config)
    t = time.perf_counter()
    if mode == "batched":
        run_dialogues(dialogues, agents, judge, settings)
    elif mode == "sequential":
        for d in dialogues:
            run_dialogues([d], agents, judge, settings)
    else:
        raise ValueError(f"unknown mode {mode!r}; known: batched, sequential")
    seconds = time.perf_counter() - t
    unfinished = [d.key for d in dialogues if not d.finished]
    if unfinished:
        raise RuntimeError(f"{len(unfinished)} dialogues did not finish in mode {mode}: {unfinished[:3]}")
    return seconds


def dialogues_per_hour(num_dialogues: int, seconds: float) -> float:
    return num_dialogues * 3600.0 / seconds


def bench_modes(config, num_dialogues: int, agents: CountingBackend, judge: ChatBackend) -> dict[str, dict]:
    """Per mode: first (untimed) and timed wall seconds, compile seconds inside the timed run, calls, tokens."""
    clock = CompileClock()
    out = {}
    for mode in ("batched", "sequential"):
        first = run_mode(mode, config, num_dialogues, agents, judge)
        clock.reset()
        agents.reset()
        timed = run_mode(mode, config, num_dialogues, agents, judge)
        out[mode] = {"first_s": first, "timed_s": timed, "compile_in_timed": clock.reset(),
                     "calls": agents.calls, "requests": agents.requests, "prompt_tokens": agents.prompt_tokens,
                     "tokens": agents.completion_tokens}
        print(f"{mode}: first run {first:.1f}s, timed {timed:.1f}s, {agents.calls} backend calls, "
              f"{agents.completion_tokens} generated tokens", flush=True)
    return out


def markdown_table(argv, args, results: dict, load: str, max_batch: int) -> str:
    import jax

    side = "questionnaire + judge through the same model" if args.side_queries else \
        "OFF (no questionnaire; judge = constant scripted reply)"
    header = (f"\n### PsySafe dialogues per hour: batched vs one at a time — {datetime.date.today()}\n\n"
              f"`{' '.join(['python tools/bench_psysafe.py', *argv])}`  \n"
              f"Machine: {machine()}, load average {load}; jax {jax.__version__} "
              f"({jax.default_backend()}).  \n"
              f"Model {args.model} (JaxBackend, float32, max_batch {max_batch}, engine {args.engine}); "
              f"AutoGen-style system, "
              f"{args.dialogues} dialogues (builtin tasks x attacks {', '.join(ATTACKS)}), {args.rounds} round(s), "
              f"<= {args.max_tokens} tokens per turn, temperature {args.temperature}; side queries {side}. "
              "Timed run after an untimed run of the same workload.\n\n"
              "| mode | timed s | dialogues/hour | backend calls | prompt tokens | generated tokens "
              "| generated tokens/s | first run s (compile + run) | compile s inside timed run |\n"
              "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for mode, r in results.items():
        lines.append(f"| {mode} | {r['timed_s']:.1f} | {dialogues_per_hour(args.dialogues, r['timed_s']):.0f} | "
                     f"{r['calls']} | {r['prompt_tokens']} | {r['tokens']} | {r['tokens'] / r['timed_s']:.1f} | "
                     f"{r['first_s']:.1f} | {r['compile_in_timed']:.1f} |\n")
    ratio = results["sequential"]["timed_s"] / results["batched"]["timed_s"]
    return header + "".join(lines) + f"\nSpeed-up of batched turns: {ratio:.2f}x in dialogues/hour (goal >= 4x).\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dialogues", type=int, default=16, help="dialogues advanced in lockstep (batched mode)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=48, help="new tokens per agent turn at most")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--side-queries", action="store_true", help="questionnaire + model judge in both modes")
    parser.add_argument("--engine", default="auto", choices=["auto", "paged", "static"],
                        help="what generates (common.generate): the paged engine, the static sampler, or auto")
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args(argv)
    if args.dialogues < 1 or args.rounds < 1 or args.max_tokens < 1:
        parser.error("--dialogues, --rounds and --max-tokens must be >= 1")

    from agent_safety.backends import ScriptedBackend
    from agent_safety.backends.jax_backend import JaxBackend

    max_batch = max(64, args.dialogues)
    agents = CountingBackend(JaxBackend.from_pretrained(args.model, max_batch=max_batch, engine=args.engine))
    judge = agents if args.side_queries else ScriptedBackend(lambda request: SCRIPTED_VERDICT, name="constant")
    config = workload_config(args.dialogues, args.rounds, args.max_tokens, args.temperature, args.side_queries)
    results = bench_modes(config, args.dialogues, agents, judge)
    table = markdown_table(argv, args, results, load_average(), max_batch)
    write_table(table, args.out)


if __name__ == "__main__":
    main()
