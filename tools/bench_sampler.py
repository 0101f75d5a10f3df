"""Decode throughput of `common.generate` against transformers' `generate`, same model, same machine, same run.

    python tools/bench_sampler.py                       # SmolLM2-135M-Instruct, float32 + bfloat16, batch 1/8/32
    python tools/bench_sampler.py --dtypes float32 --batches 1 --repeats 3

Prompts: 64 tokens each, 128 new tokens, greedy, no early stop. Tokens/s counts generated tokens of the whole
batch over wall time, compile excluded (our first call is timed separately as compile + run). The bandwidth
limit at batch 1 is (bytes of weights read per decoded token) / (measured memory bandwidth), two ways: the copy rate
(bytes copied per second by a memory copy over every core: the issue's measure, the "copies memory at about 22
GB/s" of ../shared/OFFLINE.md; STREAM would count each byte twice, read and written) and the read rate (bytes read
per second by a reduction over every core), which is what decoding, reading its weights and writing almost
nothing, actually meets. Our weight rate (weights read per second by the decode steps) is shown beside them. Both
rates are probed right before and after each of our timings, as this VM's bandwidth moves within minutes.
Writes a markdown table (stdout, and --out FILE appends it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench_common import machine, write_table


def copy_rate_gbs(nbytes: int = 1 << 30, repeats: int = 5, threads: int | None = None) -> float:
    """Bytes copied per second by a numpy copy of `nbytes` (each byte counted once, as ../shared/OFFLINE.md's
    "copies memory at about 22 GB/s"; STREAM's Copy figure counts it twice, read and written), best of `repeats`.
    The copy is split over `threads` threads (default: every core this process may run on), as decoding uses
    them all: one core alone cannot reach the machine's bandwidth."""
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
    return nbytes / best / 1e9


def read_bandwidth_gbs(nbytes: int = 1 << 30, repeats: int = 5, threads: int | None = None) -> float:
    """Memory read bandwidth: bytes read per second by a numpy max over `nbytes`, split over `threads` threads
    (default: every core), best of `repeats`. Decoding reads its weights and writes almost nothing, so this is
    the limit it meets; on this VM it has measured 1.2-2x `copy_rate_gbs` (a copy also writes every byte)."""
    threads = threads or len(os.sched_getaffinity(0))
    data = np.ones(nbytes // 4, np.float32)
    bounds = np.linspace(0, data.size, threads + 1).astype(int)
    chunks = [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:  # numpy's reductions release the GIL
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.max, chunks))
            best = min(best, time.perf_counter() - t)
    return nbytes / best / 1e9


def bandwidths() -> tuple[float, float]:
    """(copy rate, read rate) in GB/s, measured now."""
    return copy_rate_gbs(), read_bandwidth_gbs()


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
    """transformers' generate, greedy, on the model's device (a GPU's work is waited for before the clock stops)."""
    import torch
    ids = torch.tensor(prompts, device=hf_model.device)
    mask = torch.ones_like(ids)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id)
    with torch.no_grad():
        hf_model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=pad_id)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = hf_model.generate(ids, attention_mask=mask, **kw).cpu()
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
    parser.add_argument("--attention", default="auto",
                        help="attention backend (common.attention): auto (the default of load_pretrained), xla, cpu")
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args(argv)

    from common.platform_flags import apply_platform_defaults

    apply_platform_defaults()  # before JAX starts: XLA reads its GPU flags then
    import jax
    import torch
    from transformers import AutoModelForCausalLM

    from common import load_pretrained
    from common.api import resolve_model_path

    path = resolve_model_path(args.model)
    rows, probes = [], []
    for dtype in args.dtypes.split(","):
        model, tokenizer = load_pretrained(path, dtype=dtype, attention=args.attention)
        backend = model.backend.name
        weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
            __import__("flax").nnx.state(model, __import__("flax").nnx.Param)))
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
        for batch in map(int, args.batches.split(",")):
            prompts = prompts_of_length(tokenizer, batch, args.prompt_len)
            # this VM's bandwidth moves by up to 1.5x within minutes: probe right before and after our timing
            before = bandwidths()
            ours, compile_s = bench_ours(model, tokenizer, prompts, args.new_tokens, args.repeats)
            after = bandwidths()
            copy_gbs, read_gbs = ((a + b) / 2 for a, b in zip(before, after))
            probes += [before, after]
            theirs = bench_hf(hf_model, prompts, args.new_tokens, args.repeats, tokenizer.pad_token_id or 0)
            # our weight rate: decode steps/s (tokens/s per sequence) x the weight bytes each step reads once; the
            # share of each limit is that rate over the probed one
            weight_gbs = ours / batch * weight_bytes / 1e9
            copy_share, read_share = weight_gbs / copy_gbs, weight_gbs / read_gbs
            rows.append((dtype, batch, ours, theirs, ours / theirs, weight_gbs, copy_share, read_share, copy_gbs,
                         read_gbs, compile_s))
            print(f"{dtype} batch {batch}: ours {ours:.1f} tok/s, transformers {theirs:.1f} tok/s, "
                  f"ratio {ours / theirs:.2f}x, weights read at {weight_gbs:.1f} GB/s: {100 * copy_share:.0f}% of the "
                  f"copy rate ({copy_gbs:.1f} GB/s), {100 * read_share:.0f}% of the read rate ({read_gbs:.1f} GB/s), "
                  f"compile {compile_s:.1f}s", flush=True)
    header = (f"\n### Sampler decode throughput — {datetime.date.today()}\n\n"
              f"`python tools/bench_sampler.py {' '.join(sys.argv[1:] if argv is None else argv)}`  \n"
              f"Machine: {machine()}, "
              f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}; "
              f"memory bandwidth probed before and after "
              f"each of our timings: copy rate {min(p[0] for p in probes):.1f}–{max(p[0] for p in probes):.1f} GB/s "
              f"(bytes copied per second), "
              f"read {min(p[1] for p in probes):.1f}–{max(p[1] for p in probes):.1f} GB/s; "
              f"model {args.model}; prompts {args.prompt_len} tokens, "
              f"{args.new_tokens} new tokens, greedy; attention backend {backend} (--attention {args.attention}).\n\n"
              "| dtype | batch | ours tok/s | transformers tok/s | ratio | our weight GB/s | share of the copy-rate "
              "limit | share of the read-rate limit | copy / read GB/s then | compile s |\n"
              "|---|---|---|---|---|---|---|---|---|---|\n")
    table = header + "".join(f"| {d} | {b} | {o:.1f} | {t:.1f} | {r:.2f}x | {w:.1f} | {100 * cs:.0f}% | "
                             f"{100 * rs:.0f}% | {cg:.1f} / {rg:.1f} | {c:.1f} |\n"
                             for d, b, o, t, r, w, cs, rs, cg, rg, c in rows)
    write_table(table, args.out)


if __name__ == "__main__":
    main()
