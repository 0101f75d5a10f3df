"""Tokens/s of the rollout engine by decode steps a host round trip (`Engine(decode_steps=k)`: k steps dispatched
back to back, each fed the last one's tokens on the device, their tokens read once): how much of a decode step
is the host waiting for the device and scheduling the next step, which k steps a round trip pay once instead of
k times.

    python tools/bench_decode_calls.py                              # SmolLM2-135M-Instruct, batch 32
    python tools/bench_decode_calls.py --preset tiny --batch 8      # a random tiny decoder: the host's share large
    python tools/bench_decode_calls.py --preset qwen2_5_0_5b --dtype bfloat16   # on a GPU (random weights)

Workload: `--batch` prompts of `--prompt` random tokens, each decoding exactly `--new-tokens` tokens (no stop
token), greedy, all in the engine's slots at once. Each k runs once untimed (compiles), then `--repeats` times;
the best is kept. Reported per k: tokens/s, host round trips, the ratio to k = 1. The tokens are checked equal for
every k (they must be: a sequence's tokens do not depend on how its steps are grouped).
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np

from bench_common import load_average, machine, write_table  # beside this script


def load_model(args):
    """(model, description): a checkpoint by name, or a random decoder at a preset's shapes."""
    if args.preset:
        from flax import nnx

        from common.config import get_preset
        from common.model import Decoder

        return Decoder(get_preset(args.preset), rngs=nnx.Rngs(0), dtype=args.dtype), f"{args.preset} (random)"
    from common import load_pretrained
    from common.api import resolve_model_path

    model, _ = load_pretrained(resolve_model_path(args.model), dtype=args.dtype)
    return model, args.model


def timed(engine, prompts, new_tokens: int, repeats: int):
    """(best seconds, output, host round trips) of `repeats` runs after an untimed one."""
    run = lambda: engine.sample(prompts, max_new_tokens=new_tokens, stop_token_ids=())  # noqa: E731
    first = run()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t)
        assert out.token_ids == first.token_ids
    return best, out, engine.stats["round_trips"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--preset", help="a random decoder at this config preset's shapes instead of --model")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--steps", default="1,2,4,8", help="decode steps a round trip to compare")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args(argv)

    import jax

    from common.engine import Engine

    model, name = load_model(args)
    prompts = np.random.default_rng(0).integers(3, model.config.vocab_size, (args.batch, args.prompt)).tolist()
    rows, tokens = [], None
    for k in [int(x) for x in args.steps.split(",")]:
        engine = Engine(model, max_slots=args.batch, max_cache_length=args.prompt + args.new_tokens, decode_steps=k)
        seconds, out, calls = timed(engine, prompts, args.new_tokens, args.repeats)
        if tokens is not None and out.token_ids != tokens:
            raise AssertionError(f"decode_steps={k} changed the tokens")
        tokens = out.token_ids
        rows.append((k, args.batch * args.new_tokens / seconds, calls, seconds))
        print(f"decode_steps={k}: {rows[-1][1]:.1f} tokens/s, {calls} round trips, {seconds:.3f} s", flush=True)
    base = rows[0][1]
    lines = [f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}. Load "
             f"average {load_average()}. jax {jax.__version__} on {jax.devices()[0].device_kind}. {name}, "
             f"{args.dtype}, backend {model.backend.name}; batch {args.batch}, {args.prompt}-token prompts, "
             f"{args.new_tokens} new tokens each, greedy; best of {args.repeats}.\n",
             "| decode steps a round trip | tokens/s | host round trips | s | over 1 step |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {rate:.1f} | {calls} | {s:.3f} | {rate / base:.2f}x |" for k, rate, calls, s in rows]
    write_table("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
