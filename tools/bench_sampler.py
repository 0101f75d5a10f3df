"""Decode throughput of `common.generate` against transformers' `generate`, same model, same machine, same run.

    python tools/bench_sampler.py                       # SmolLM2-135M-Instruct, float32 + bfloat16, batch 1/8/32
    python tools/bench_sampler.py --dtypes float32 --batches 1 --repeats 3

Prompts: 64 tokens each, 128 new tokens, greedy, no early stop. Tokens/s counts generated tokens of the whole
batch over wall time, compile excluded (our first call is timed separately as compile + run). The bandwidth
limit at batch 1 is (bytes of weights read per decoded token) / (measured memory copy bandwidth).
Writes a markdown table (stdout, and --out FILE appends it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # tools.bench_common lives at the repository root
    sys.path.insert(0, str(REPO_ROOT))

from tools.bench_common import write_table  # noqa: E402


def copy_bandwidth_gbs(nbytes: int = 1 << 30, repeats: int = 5, threads: int | None = None) -> float:
    """Memory bandwidth by a numpy copy, counted as STREAM does (each byte read once and written once: 2x the
    bytes copied, per second), best of `repeats`. The copy is split over `threads` threads (default: every
    core this process may run on), as decoding uses them all: one core alone cannot reach the machine's
    bandwidth."""
    threads = threads or len(os.sched_getaffinity(0))
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, src.size, threads + 1).astype(int)
    chunks = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:  # np.copyto releases the GIL
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(lambda c: np.copyto(*c), chunks))
            best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best / 1e9


def prompts_of_length(tokenizer, batch: int, length: int) -> list[list[int]]:
    text = ("The history of mathematics spans thousands of years, from counting on fingers to abstract "
            "algebra, geometry, calculus and the theory of numbers. ") * 20
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [ids[i:i + length] for i in range(batch)]


def bench_ours(model, tokenizer, prompts, new_tokens, repeats):
    from common import generate
    t = time.perf_counter()
    generate(model, tokenizer, prompts, max_new_tokens=new_tokens, stop_token_ids=[])
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        outs = generate(model, tokenizer, prompts, max_new_tokens=new_tokens, stop_token_ids=[])
        times.append(time.perf_counter() - t)
        assert all(len(o.token_ids) == new_tokens for o in outs)
    best = min(times)
    return len(prompts) * new_tokens / best, first - best


def bench_hf(hf_model, prompts, new_tokens, repeats, pad_id):
    import torch
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id)
    with torch.no_grad():
        hf_model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=pad_id)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = hf_model.generate(ids, attention_mask=mask, **kw)
            times.append(time.perf_counter() - t)
            assert out.shape[1] == ids.shape[1] + new_tokens
    return len(prompts) * new_tokens / min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args(argv)

    import jax
    import torch
    from transformers import AutoModelForCausalLM

    from common import load_pretrained
    from common.api import resolve_model_path
    from common.kernels import cpu_build

    path = resolve_model_path(args.model)
    bandwidth = copy_bandwidth_gbs()
    rows = []
    for dtype in args.dtypes.split(","):
        model, tokenizer = load_pretrained(path, dtype=dtype)
        weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
            __import__("flax").nnx.state(model, __import__("flax").nnx.Param)))
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
        limit = bandwidth * 1e9 / weight_bytes  # decode steps/s if weights are read once per step
        for batch in map(int, args.batches.split(",")):
            prompts = prompts_of_length(tokenizer, batch, args.prompt_len)
            ours, compile_s = bench_ours(model, tokenizer, prompts, args.new_tokens, args.repeats)
            theirs = bench_hf(hf_model, prompts, args.new_tokens, args.repeats, tokenizer.pad_token_id or 0)
            share = ours / batch / limit
            rows.append((dtype, batch, ours, theirs, ours / theirs, share, compile_s))
            print(f"{dtype} batch {batch}: ours {ours:.1f} tok/s, transformers {theirs:.1f} tok/s, "
                  f"ratio {ours / theirs:.2f}x, {100 * share:.0f}% of bandwidth limit, compile {compile_s:.1f}s",
                  flush=True)
    header = (f"\n### Sampler decode throughput — {datetime.date.today()}\n\n"
              f"`python tools/bench_sampler.py {' '.join(sys.argv[1:] if argv is None else argv)}`  \n"
              f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores, jax {jax.__version__} "
              f"({jax.default_backend()}), torch {torch.__version__}; memory copy bandwidth "
              f"{bandwidth:.1f} GB/s; model {args.model}; prompts {args.prompt_len} tokens, "
              f"{args.new_tokens} new tokens, greedy; our CPU decode kernels "
              f"{'on' if cpu_build.enabled() and cpu_build.available() else 'off'}.\n\n"
              "| dtype | batch | ours tok/s | transformers tok/s | ratio | share of bandwidth limit (per-sequence) | compile s |\n"
              "|---|---|---|---|---|---|---|\n")
    table = header + "".join(f"| {d} | {b} | {o:.1f} | {t:.1f} | {r:.2f}x | {100 * s:.0f}% | {c:.1f} |\n"
                             for d, b, o, t, r, s, c in rows)
    write_table(table, args.out)


if __name__ == "__main__":
    main()
