"""A decode step alone, three ways in one process, alternated so that each pair of timings meets the same machine.

    python tools/bench_decode_step.py                    # SmolLM2-135M-Instruct, float32 + bfloat16, batch 1/8/32
    python tools/bench_decode_step.py --dtypes bfloat16 --batches 1 --pairs 12

The three ways (attention backends, `common.attention`):
  xla        the reference: XLA:CPU's own ops;
  per-op     the "cpu" backend with the kernels op by op: packed weight products, decode attention
             (cpu_kernels.backend.CpuKernels(layer_kernel=False));
  layer      the "cpu" backend as shipped: each decoder layer of the step as one kernel call (cpu_kernels/src/layer.cc).
Each program runs `--steps` greedy decode steps after a 64-token prefill (not timed), with the weights prepared
ahead as the sampler keeps them. Needs the kernels package (`pip install -e ./cpu_kernels`). This VM's speed moves by 10-50 % within minutes, so the tool reports the
median of the paired ratios (another way's time over the layer kernel's in the same round) besides the
medians, and the copy and read bandwidth probed before and after (tools/bench_sampler.py).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import numpy as np

from bench_common import machine, write_table
from bench_sampler import bandwidths


def ways() -> dict:
    """{way: attention backend}."""
    from common.attention import XlaAttention
    from cpu_kernels.backend import CpuKernels

    return {"xla": XlaAttention(), "per-op": CpuKernels(layer_kernel=False), "layer": CpuKernels()}


def step_programs(model, batch: int, steps: int, prompt_len: int = 64):
    """{way: zero-argument callable running `steps` decode steps}, each compiled for its backend."""
    import jax
    import jax.numpy as jnp
    from flax import nnx


    vocab = model.config.vocab_size
    prompt = jnp.asarray(np.random.default_rng(0).integers(vocab // 10, vocab // 2, (batch, prompt_len)), jnp.int32)
    programs, own = {}, model.backend  # each returns the last step's tokens
    for way, backend in ways().items():
        model.use_backend(backend)
        graphdef, state = nnx.split(model)
        prepared = backend.prepare(model) if backend.uses_prepared(batch, model.dtype) else None

        def prefill(state, prepared, graphdef=graphdef, backend=backend):
            m = nnx.merge(graphdef, state)
            cache = m.new_cache(batch, prompt_len + steps + 1)
            hidden, cache = backend.cached_forward(m, prepared, prompt, cache, prefill=True)
            logits = backend.logits(m, prepared, hidden[:, -1:])
            return jnp.argmax(logits, -1).astype(jnp.int32), cache

        def decode(state, prepared, token, cache, graphdef=graphdef, backend=backend):
            m = nnx.merge(graphdef, state)

            def step(_, carry):
                token, cache = carry
                hidden, cache = backend.cached_forward(m, prepared, token, cache)
                return jnp.argmax(backend.logits(m, prepared, hidden), -1).astype(jnp.int32), cache

            return jax.lax.fori_loop(0, steps, step, (token, cache))[0]

        args = jax.jit(prefill)(state, prepared)
        run = jax.jit(decode)
        run(state, prepared, *args).block_until_ready()  # compiled here
        programs[way] = lambda run=run, state=state, prepared=prepared, args=args: np.asarray(
            run(state, prepared, *args))
    model.use_backend(own)
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

    try:
        from cpu_kernels import build
    except ImportError:
        sys.exit("the kernels package is not installed (pip install -e ./cpu_kernels): nothing to compare")
    if not build.available():
        sys.exit("the CPU kernels cannot be built here: nothing to compare")
    path = resolve_model_path(args.model)
    rows = []
    for dtype in args.dtypes.split(","):
        model, _ = load_pretrained(path, dtype=dtype, attention="xla")
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
