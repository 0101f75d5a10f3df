"""A decode step alone, three ways in one process, alternated so that each pair of timings meets the same machine.

    python tools/bench_decode_step.py                    # SmolLM2-135M-Instruct, float32 + bfloat16, batch 1/8/32
    python tools/bench_decode_step.py --dtypes bfloat16 --batches 1 --pairs 12

The three ways (chosen when each program is traced):
  xla        XLA:CPU's own ops (QRR_CPU_KERNELS=0);
  per-op     our CPU kernels op by op: packed weight products, attention, cache writes (QRR_CPU_LAYER_KERNEL=0);
  layer      each decoder layer of the step as one kernel call (common/kernels/cpu_layer.cc), in either dtype
             (QRR_CPU_LAYER_KERNEL=all; by default only where it measured faster: cpu_layer.FASTER).
Each program runs `--steps` greedy decode steps after a 64-token prefill (not timed), with the weights packed
ahead as the sampler keeps them. This VM's speed moves by 10-50 % within minutes, so the tool reports the
median of the paired ratios (another way's time over the layer kernel's in the same round) besides the
medians, and the copy and read bandwidth probed before and after (tools/bench_sampler.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.bench_common import machine, write_table  # noqa: E402
from tools.bench_sampler import bandwidths  # noqa: E402

WAYS = {"xla": {"QRR_CPU_KERNELS": "0"}, "per-op": {"QRR_CPU_LAYER_KERNEL": "0"},
        "layer": {"QRR_CPU_LAYER_KERNEL": "all"}}


@contextlib.contextmanager
def environment(values: dict):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def step_programs(model, batch: int, steps: int, prompt_len: int = 64):
    """{way: zero-argument callable running `steps` decode steps}, each traced and compiled under its way."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from common.kernels import cpu_build
    from common.model import KVCache

    graphdef, state = nnx.split(model)
    vocab = model.config.vocab_size
    prompt = jnp.asarray(np.random.default_rng(0).integers(vocab // 10, vocab // 2, (batch, prompt_len)), jnp.int32)

    def prefill(state, packed: bool):
        m = nnx.merge(graphdef, state)
        cache = KVCache.zeros(m.config, batch, prompt_len + steps + 1, m.dtype)
        panels = m.decode_panels() if packed else None
        logits, cache = m.forward(prompt, cache=cache, panels=panels)
        return jnp.argmax(logits[:, -1:], -1).astype(jnp.int32), cache, panels

    def decode(state, token, cache, panels):
        m = nnx.merge(graphdef, state)

        def step(_, carry):
            token, cache = carry
            logits, cache = m.forward(token, cache=cache, panels=panels)
            return jnp.argmax(logits, -1).astype(jnp.int32), cache

        return jax.lax.fori_loop(0, steps, step, (token, cache))[0]

    programs = {}  # each returns the last step's tokens
    for way, env in WAYS.items():
        with environment(env):
            packed = cpu_build.usable()
            args = jax.jit(prefill, static_argnums=1)(state, packed)
            run = jax.jit(decode)
            run(state, *args).block_until_ready()  # traced and compiled here, under `env`
        programs[way] = lambda run=run, args=args: np.asarray(run(state, *args))
    return programs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=8, help="rounds, each timing every way once")
    parser.add_argument("--out", help="append the markdown table to this file")
    args = parser.parse_args(argv)

    import jax

    from common import load_pretrained
    from common.api import resolve_model_path
    from common.kernels import cpu_build

    if not cpu_build.available():
        sys.exit("the CPU kernels are not available here: nothing to compare")
    path = resolve_model_path(args.model)
    rows = []
    for dtype in args.dtypes.split(","):
        model, _ = load_pretrained(path, dtype=dtype)
        weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(
            __import__("flax").nnx.state(model, __import__("flax").nnx.Param)))
        for batch in map(int, args.batches.split(",")):
            programs = step_programs(model, batch, args.steps)
            before = bandwidths()
            times = {way: [] for way in programs}
            for _ in range(args.pairs):
                for way, run in programs.items():
                    t = time.perf_counter()
                    run()
                    times[way].append((time.perf_counter() - t) / args.steps * 1e3)
            after = bandwidths()
            copy_gbs, read_gbs = ((a + b) / 2 for a, b in zip(before, after))
            layer = np.asarray(times["layer"])
            for way, ts in times.items():
                ms = float(np.median(ts))
                ratio = float(np.median(np.asarray(ts) / layer))
                rows.append((dtype, batch, way, ms, weight_bytes / ms / 1e6, ratio, copy_gbs, read_gbs))
                print(f"{dtype} batch {batch} {way}: {ms:.2f} ms/step, weights {weight_bytes / ms / 1e6:.1f} GB/s, "
                      f"x{ratio:.3f} the layer kernel's time (paired median); copy {copy_gbs:.1f} / read "
                      f"{read_gbs:.1f} GB/s", flush=True)
    header = (f"\n### Decode step alone, three ways — {datetime.date.today()}\n\n"
              f"`python tools/bench_decode_step.py {' '.join(sys.argv[1:] if argv is None else argv)}`  \n"
              f"Machine: {machine()}, "
              f"jax {jax.__version__}; model {args.model}; {args.steps} greedy steps after a 64-token prefill, "
              f"{args.pairs} rounds.\n\n"
              "| dtype | batch | way | median ms/step | weight GB/s | time / layer kernel's (paired median) | "
              "copy / read GB/s then |\n|---|---|---|---|---|---|---|\n")
    table = header + "".join(f"| {d} | {b} | {w} | {ms:.2f} | {gbs:.1f} | {r:.3f} | {cg:.1f} / {rg:.1f} |\n"
                             for d, b, w, ms, gbs, r, cg, rg in rows)
    write_table(table, args.out)


if __name__ == "__main__":
    main()
