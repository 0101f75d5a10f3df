"""A GRPO-shaped long-tail rollout three ways, same prompts and memory: the paged engine (`common.engine`),
the static sampler (`common.sampler`) and transformers' continuous batching (the manager behind
`generate_batch`, paged attention).

    python tools/bench_rollouts.py                          # 64 GSM8K test questions x G = 8, <= 512 new tokens
    python tools/bench_rollouts.py --prompts 16 --new-tokens 256 --skip-hf
    python tools/bench_rollouts.py --hf-seconds 1200        # transformers stopped after 20 min (it is ~10x slower)

Workload: the first `--prompts` GSM8K test questions as chat prompts (the model's template), each sampled
`--group` times at temperature 1.0, at most `--new-tokens` tokens, stopping at the end token. Memory: the
static sampler generates in calls of `--static-batch` sequences, each call's KV cache holding its longest prompt
plus the new-token budget; the engine's page pool holds as many token slots (`--engine-slots` sequences decode at
once: short ones leave pages for more); transformers gets as many blocks of `--page-size` tokens. Ours run the
whole workload once untimed (compiling every shape it meets), then once timed; transformers runs once (eager),
its tokens streamed so a run stopped at `--hf-seconds` counts every token made by then.

Reported per way: seconds, generated tokens, tokens/s, the ratio to the engine, decode steps; and the ideal gain
the measured lengths allow a continuous batch over the static one at the static batch: the static sampler's
decode steps (each call runs to its longest sequence) over total tokens / static batch (every step full).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from pathlib import Path

from bench_common import load_average, machine, write_table  # beside this script

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "math" / "gsm8k" / "test.jsonl"


def gsm8k_questions(n: int, path: Path = GSM8K) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["question"] for _, line in zip(range(n), f)]


def ideal_gain(call_steps: list[int], total_tokens: int, batch: int) -> float:
    """Static decode steps (the sum over calls of each call's longest sequence) over the steps of a batch of
    `batch` kept full: total_tokens / batch."""
    return sum(call_steps) / max(total_tokens / batch, 1e-9)


def run_static(sampler, params, prompts, args, stops):
    """(seconds, tokens, per-call decode steps)."""
    t, tokens, steps = time.perf_counter(), 0, []
    for lo in range(0, len(prompts), args.static_batch):
        out = sampler.generate(params, prompts[lo:lo + args.static_batch], max_new_tokens=args.new_tokens,
                               temperature=1.0, seed=args.seed + lo, stop_token_ids=stops)
        tokens += sum(len(x) for x in out.token_ids)
        steps.append(out.decode_steps)
    return time.perf_counter() - t, tokens, steps


def run_engine(engine, params, prompts, args, stops):
    t = time.perf_counter()
    out = engine.generate(params, prompts, max_new_tokens=args.new_tokens, temperature=1.0, seed=args.seed,
                          stop_token_ids=stops)
    return time.perf_counter() - t, sum(len(x) for x in out.token_ids), engine.stats


def run_transformers(path, prompts, args, stops, slots: int):
    """(seconds, tokens, whether every request finished). Streams every request's tokens, so a run stopped at
    `--hf-seconds` still counts each token made by then (its rate then has no tail: an upper bound of its rate)."""
    import torch
    from transformers import AutoModelForCausalLM, ContinuousBatchingConfig, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).eval()
    generation = GenerationConfig(max_new_tokens=args.new_tokens, do_sample=True, temperature=1.0, top_k=0,
                                  top_p=1.0, eos_token_id=list(stops), pad_token_id=0)
    batching = ContinuousBatchingConfig(page_size=args.page_size, num_blocks=math.ceil(slots / args.page_size),
                                        max_batch_tokens=args.prefill_tokens, max_requests_per_batch=args.engine_slots,
                                        seed=args.seed)
    torch.manual_seed(args.seed)
    made, finished = {}, set()
    t = time.perf_counter()
    deadline = t + (args.hf_seconds or float("inf"))
    with torch.no_grad(), model.continuous_batching_context_manager(
            generation_config=generation, continuous_batching_config=batching, block=True, timeout=5) as manager:
        manager.add_requests(inputs=prompts, max_new_tokens=args.new_tokens, streaming=True)
        while len(finished) < len(prompts) and time.perf_counter() < deadline:
            result = manager.get_result(timeout=1)
            if result is None:
                if not manager.is_running():
                    raise RuntimeError("transformers' generation thread stopped before every request finished")
                continue
            if result.error is not None:
                raise RuntimeError(f"transformers request {result.request_id} failed: {result.error}")
            made[result.request_id] = len(result.generated_tokens)
            if result.is_finished():
                finished.add(result.request_id)
        seconds = time.perf_counter() - t
    return seconds, sum(made.values()), len(finished) == len(prompts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--static-batch", type=int, default=64, help="sequences per static sampler call")
    parser.add_argument("--engine-slots", type=int, default=128, help="sequences the engine decodes at once")
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--prefill-tokens", type=int, default=1024, help="prompt tokens per engine prefill call")
    parser.add_argument("--decode-steps", type=int, default=None, help="the engine's decode steps a host round trip "
                        "(default: the engine's for the platform)")
    parser.add_argument("--growth-reserve", type=float, default=None, help="the engine's admission reserve: a share "
                        "of each running sequence's remaining budget kept in free pages (default: the engine's)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-hf", action="store_true", help="leave transformers out")
    parser.add_argument("--hf-seconds", type=float, help="stop transformers after this long and count the tokens "
                        "made by then (an upper bound of its rate: the tail is not reached)")
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args(argv)

    from common import load_pretrained
    from common.api import resolve_model_path
    from common.chat import chat_prompt_ids
    from common.engine import Engine
    from common.sampler import Sampler, call_shape
    from common.tokenizer import end_token_ids

    path = resolve_model_path(args.model)
    model, tokenizer = load_pretrained(path, dtype=args.dtype)
    questions = gsm8k_questions(args.prompts)
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}])
               for q in questions for _ in range(args.group)]
    stops = end_token_ids(tokenizer)
    longest = max(len(p) for p in prompts)
    _, cache_length = call_shape(longest, args.new_tokens, longest + args.new_tokens)
    slots = args.static_batch * cache_length  # token slots of KV both of ours (and transformers) may hold
    sampler = Sampler(model, max_cache_length=cache_length)
    engine = Engine(model, max_cache_length=longest + args.new_tokens, max_slots=args.engine_slots,
                    page_size=args.page_size, num_pages=1 + slots // args.page_size,
                    prefill_chunk=min(args.prefill_tokens, 256), prefill_tokens=args.prefill_tokens,
                    pad_id=tokenizer.pad_token_id or 0, decode_steps=args.decode_steps,
                    **({} if args.growth_reserve is None else {"growth_reserve": args.growth_reserve}))
    params = sampler.state
    print(f"{len(prompts)} sequences, prompts {min(map(len, prompts))}-{longest} tokens, KV budget {slots} token slots "
          f"({args.static_batch} x {cache_length})", flush=True)
    rows = {}
    for name, run in [("static sampler", lambda: run_static(sampler, params, prompts, args, stops)),
                      ("paged engine", lambda: run_engine(engine, params, prompts, args, stops))]:
        t = time.perf_counter()
        run()  # untimed: compiles every shape the workload meets
        print(f"{name}: warm-up {time.perf_counter() - t:.0f} s", flush=True)
        rows[name] = run()
        print(f"{name}: {rows[name][0]:.1f} s, {rows[name][1]} tokens", flush=True)
    static_s, static_tokens, call_steps = rows["static sampler"]
    engine_s, engine_tokens, stats = rows["paged engine"]
    table_rows = [("paged engine (ours)", engine_s, engine_tokens, f"{stats['calls']} calls, "
                   f"{stats['preemptions']} preemptions"),
                  ("static sampler (ours)", static_s, static_tokens, f"{sum(call_steps)} steps in "
                   f"{len(call_steps)} calls")]
    if not args.skip_hf:
        hf_s, hf_tokens, whole = run_transformers(path, prompts, args, stops, slots)
        print(f"transformers: {hf_s:.1f} s, {hf_tokens} tokens{'' if whole else ' (stopped at --hf-seconds)'}",
              flush=True)
        table_rows.append(("transformers continuous batching", hf_s, hf_tokens, "paged" if whole else
                           f"paged; stopped after {args.hf_seconds:.0f} s, tokens made by then (no tail)"))
    engine_rate = engine_tokens / engine_s
    lines = [f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}. "
             f"Load average {load_average()}. {len(prompts)} sequences ({args.prompts} GSM8K test questions x "
             f"{args.group}), <= {args.new_tokens} new tokens, temperature 1.0, {args.dtype}; KV budget {slots} "
             f"token slots; engine {args.engine_slots} slots, pages of {args.page_size}, "
             f"{engine.decode_steps} decode step(s) a host round trip, growth reserve {engine.growth_reserve}.\n",
             "| way | s | tokens | tokens/s | engine's tokens/s over it | notes |", "|---|---|---|---|---|---|"]
    for name, seconds, tokens, notes in table_rows:
        rate = tokens / seconds
        lines.append(f"| {name} | {seconds:.1f} | {tokens} | {rate:.1f} | {engine_rate / rate:.2f}x | {notes} |")
    lines.append(f"\nIdeal gain of continuous over static batching at batch {args.static_batch} from the static run's "
                 f"lengths: {ideal_gain(call_steps, static_tokens, args.static_batch):.2f}x.\n")
    write_table("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
