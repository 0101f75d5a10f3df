"""Load test of the OpenAI-compatible server (`common.serving`) on loopback: many concurrent streaming clients for
a bounded time, then one client sending one request at a time, against the same server.

    python tools/bench_serving.py                                    # SmolLM2-135M-Instruct, 64 clients, 60 s
    python tools/bench_serving.py --clients 16 --seconds 20 --max-tokens 64
    python tools/bench_serving.py --url http://127.0.0.1:8000/v1 --model-id NAME [--api-key K]   # a running server

Each client sends chat requests (GSM8K test questions, or --prompt) with stream=True, one after the other,
until the phase's time is up; a request in flight then finishes (none is cut off). Requests generate exactly
--max-tokens tokens (`ignore_eos`), temperature 1.0. Without --url the server runs in this process (uvicorn in a
thread, the engine loop in another), after an untimed warm-up that compiles the shapes the load meets.

Reported per phase: requests, requests lost (sent but not answered in full: must be 0), tokens, tokens/s over
the phase's wall time, and p50 / p99 of the time to the first token and of the whole request.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import time

from bench_common import load_average, machine, write_table  # beside this script
from bench_rollouts import GSM8K, gsm8k_questions


@dataclasses.dataclass
class Record:
    """One request: whether it was answered in full, seconds to its first token and to its end, tokens."""

    ok: bool
    first_s: float = 0.0
    total_s: float = 0.0
    tokens: int = 0
    error: str = ""


async def one_request(client, model_id: str, question: str, args, seed: int) -> Record:
    t = time.perf_counter()
    first, tokens = None, 0
    try:
        stream = await client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": question}], max_tokens=args.max_tokens,
            temperature=1.0, seed=seed, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True})
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except Exception as error:  # noqa: BLE001 - counted as lost, named in the output
        return Record(False, error=f"{type(error).__name__}: {error}")
    total = time.perf_counter() - t
    if tokens != args.max_tokens:
        return Record(False, error=f"{tokens} of {args.max_tokens} tokens")
    return Record(True, total if first is None else first, total, tokens)


async def phase(client, model_id: str, questions: list[str], clients: int, seconds: float, args) -> dict:
    """`clients` clients for `seconds`; returns the phase's numbers."""
    records: list[Record] = []
    sent = 0
    deadline = time.perf_counter() + seconds

    async def run_client(k: int) -> None:
        nonlocal sent
        i = k
        while True:  # at least one request each (a warm-up phase of 0 s: one per client)
            sent += 1
            records.append(await one_request(client, model_id, questions[i % len(questions)], args, seed=i))
            i += clients
            if time.perf_counter() >= deadline:
                return

    t = time.perf_counter()
    await asyncio.gather(*(run_client(k) for k in range(clients)))
    wall = time.perf_counter() - t
    ok = [r for r in records if r.ok]
    return {"clients": clients, "wall": wall, "sent": sent, "lost": sent - len(ok), "tokens": sum(r.tokens for r in ok),
            "first": [r.first_s for r in ok], "total": [r.total_s for r in ok],
            "errors": [r.error for r in records if not r.ok]}


def percentiles(values: list[float]) -> str:
    import numpy as np

    if not values:
        return "–"
    p50, p99 = np.percentile(values, [50, 99])
    return f"{p50:.2f} / {p99:.2f}"


def table(results: list[tuple[str, dict]], header: str) -> str:
    lines = [header, "| clients | s | requests | lost | tokens | tokens/s | first token p50 / p99 (s) | "
             "request p50 / p99 (s) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results:
        lines.append(f"| {name} | {r['wall']:.1f} | {r['sent']} | {r['lost']} | {r['tokens']} | "
                     f"{r['tokens'] / r['wall']:.1f} | {percentiles(r['first'])} | {percentiles(r['total'])} |")
    (_, many), (_, one) = results
    lines.append(f"\n{many['clients']} concurrent clients over one at a time: "
                 f"{(many['tokens'] / many['wall']) / max(one['tokens'] / one['wall'], 1e-9):.2f}x tokens/s.\n")
    return "\n".join(lines)


async def bench(base_url: str, api_key: str, model_id: str, questions: list[str], args) -> list[tuple[str, dict]]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=args.request_timeout_s)
    if not args.no_warmup:
        t = time.perf_counter()
        await phase(client, model_id, questions, args.clients, 0.0, args)  # one request per client: every batch size
        print(f"warm-up {time.perf_counter() - t:.0f} s", flush=True)
    results = []
    for name, clients, seconds in [(f"{args.clients} concurrent (streaming)", args.clients, args.seconds),
                                   ("1 (one at a time)", 1, args.sequential_seconds or args.seconds)]:
        results.append((name, await phase(client, model_id, questions, clients, seconds, args)))
        r = results[-1][1]
        print(f"{name}: {r['sent']} requests, {r['lost']} lost, {r['tokens']} tokens in {r['wall']:.1f} s", flush=True)
        for error in r["errors"][:5]:
            print(f"  lost: {error}", flush=True)
    await client.close()
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="what the in-process server loads")
    p.add_argument("--url", help="bench a running server at this base URL instead (…/v1)")
    p.add_argument("--model-id", help="with --url: the model id to ask for (default: the server's first)")
    p.add_argument("--api-key", default="none", help="with --url: the server's key")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0, help="the concurrent phase's length")
    p.add_argument("--sequential-seconds", type=float, default=None,
                   help="the one-at-a-time phase's length (default: --seconds)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens each request generates")
    p.add_argument("--prompt", action="append", default=[],
                   help="a question (repeatable; default: GSM8K test questions)")
    p.add_argument("--max-slots", type=int, default=64, help="the in-process engine's slots")
    p.add_argument("--dtype", default=None, help="the in-process model's compute dtype (default: the platform's)")
    p.add_argument("--request-timeout-s", type=float, default=600.0)
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--out", help="append the markdown table to this file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    questions = args.prompt or gsm8k_questions(256)
    source = "given prompts" if args.prompt else f"chat prompts of GSM8K test questions ({GSM8K.parent.name})"
    if args.url:
        import openai

        model_id = args.model_id or openai.OpenAI(base_url=args.url, api_key=args.api_key).models.list().data[0].id
        results = asyncio.run(bench(args.url, args.api_key, model_id, questions, args))
        served = f"the server at {args.url} ({model_id})"
    else:
        from common.api import load_for_command
        from common.serving import ModelServer, ServerThread, make_app

        model, tokenizer, _ = load_for_command(args.model, dtype=args.dtype)
        server = ModelServer(model, tokenizer, args.model, max_slots=args.max_slots).start()
        with ServerThread(make_app(server, api_key="bench")) as http:
            results = asyncio.run(bench(http.base_url, "bench", args.model, questions, args))
        server.close()
        served = f"{args.model} ({model.dtype}) served in this process, {args.max_slots} engine slots"
    header = (f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}. Load "
              f"average {load_average()}. {served}; {source}; {args.max_tokens} new tokens a request (ignore_eos), "
              f"temperature 1.0, streamed; clients on loopback.\n")
    write_table(table(results, header), args.out)
    return 1 if any(r["lost"] for _, r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
