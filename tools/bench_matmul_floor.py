"""The floor under decoding on this machine: one decode step's matrix products alone, in XLA and in torch.

    python tools/bench_matmul_floor.py                      # SmolLM2-135M shapes, float32 + bfloat16, batch 1/8/32
    python tools/bench_matmul_floor.py --prefill-rows 2048  # each layer product at 2048 rows (a prefill), GFLOP/s

A step of a decoder reads every weight matrix once, then the tied head. This runs exactly that chain of
products, with no attention, sampling or loop bookkeeping, at the batch sizes the sampler benchmark uses:
jitted in JAX (XLA:CPU) as our decoder samples (per layer: fused q/k/v, o, fused gate/up, down, accumulated in
float32: on the CPU kernels' panels packed once ahead, as the "cpu" backend keeps them, where it uses them;
else the decoder's own sampling product `common.model.product`), and eagerly
in torch as transformers does it (q, k, v, o, gate, up, down). When the chain alone is as
fast in torch as in XLA, no sampler on XLA can be much faster than transformers at that batch; at batch 1 the
chain's weight bytes per second is the most a decode step can reach. Both use every core the process may
run on; pin with taskset to compare with `tools/bench_sampler.py` pinned the same way.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from common.config import get_preset

from bench_common import machine

STEPS = 16


def layer_shapes(config) -> list[tuple[int, int]]:
    """transformers' products per layer: q, k, v, o, gate, up, down."""
    d, F = config.hidden_size, config.intermediate_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    return [(d, q), (d, kv), (d, kv), (q, d), (d, F), (d, F), (F, d)]


def fused_layer_shapes(config) -> list[tuple[int, int]]:
    """Our decoder's products per layer: fused q/k/v, o, fused gate/up, down."""
    d, F = config.hidden_size, config.intermediate_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    return [(d, q + 2 * kv), (q, d), (d, 2 * F), (F, d)]


def _cpu_kernels():
    """The kernels package (its products, forward and backend modules) where installed and built, else None."""
    try:
        import cpu_kernels.backend
        import cpu_kernels.forward
        import cpu_kernels.products
        from cpu_kernels import build
    except ImportError:
        return None
    return cpu_kernels if build.available() else None


def xla_ms_per_step(config, batch: int, dtype: str) -> tuple[float, int]:
    import jax
    import jax.numpy as jnp

    from common.model import product

    dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    rng = np.random.default_rng(0)
    weights = [[jnp.asarray(rng.standard_normal(s, np.float32) * 0.02, dt) for s in fused_layer_shapes(config)]
               for _ in range(config.num_layers)]
    q_width, F = config.num_heads * config.head_dim, config.intermediate_size
    head = jnp.asarray(rng.standard_normal((config.vocab_size, config.hidden_size), np.float32) * 0.02, dt)
    nbytes = sum(w.nbytes for layer in weights for w in layer) + head.nbytes

    # as the sampler: the weights packed for the CPU kernels once per parameter version, where the backend uses them
    kernels = _cpu_kernels()
    on_kernels = kernels is not None and kernels.backend.CpuKernels().uses_prepared(batch, dt)
    if on_kernels:
        pack = jax.jit(lambda weights, head: ([[kernels.products.pack(w) for w in layer] for layer in weights],
                                              kernels.products.pack(head, transposed=True)))
        packed, head_packed = pack(weights, head)
    else:
        packed, head_packed = [[None] * 4 for _ in weights], None

    def mul(x, w, panels, transposed=False, out_dtype=None):  # x [M, c] . w as the sampler does it
        if panels is None:
            return product(x, w, 1, sampling=True, transposed=transposed, out_dtype=out_dtype)
        n = w.shape[0] if transposed else w.shape[1]
        return kernels.forward.packed_product(x, panels, 1, (n,), out_dtype or x.dtype)

    @jax.jit
    def run(weights, head, x, packed, head_packed):
        def step(_, x):
            for (qkv, o, gate_up, down), (pq, po, pg, pd) in zip(weights, packed):
                y = mul(x, qkv, pq)
                x = x + mul(y[:, :q_width] + y[:, q_width:].sum(), o, po)
                h = mul(x, gate_up, pg)
                x = x + mul(jax.nn.silu(h[:, :F]) * h[:, F:], down, pd)
                x = x / (1 + jnp.abs(x).mean())
            logits = mul(x, head, head_packed, transposed=True, out_dtype=jnp.float32)
            return x + (logits[:, :x.shape[1]] * 1e-3).astype(x.dtype)
        return jax.lax.fori_loop(0, STEPS, step, x)

    x = jnp.ones((batch, config.hidden_size), dt)
    run(weights, head, x, packed, head_packed).block_until_ready()
    t = time.perf_counter()
    run(weights, head, x, packed, head_packed).block_until_ready()
    return (time.perf_counter() - t) / STEPS * 1e3, nbytes


def torch_ms_per_step(config, batch: int, dtype: str) -> float:
    import torch

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    gen = torch.Generator().manual_seed(0)
    weights = [[torch.randn(*s, generator=gen, dtype=dt) * 0.02 for s in layer_shapes(config)]
               for _ in range(config.num_layers)]
    head = torch.randn(config.vocab_size, config.hidden_size, generator=gen, dtype=dt) * 0.02

    def step(x):
        for q, k, v, o, g, u, d in weights:
            a = x @ q + (x @ k).sum() + (x @ v).sum()
            x = x + a @ o
            x = x + (torch.nn.functional.silu(x @ g) * (x @ u)) @ d
            x = x / (1 + x.abs().mean())
        logits = x @ head.T
        return x + logits[:, :x.shape[1]] * 1e-3

    with torch.no_grad():
        x = step(torch.ones(batch, config.hidden_size, dtype=dt))
        t = time.perf_counter()
        for _ in range(STEPS):
            x = step(x)
    return (time.perf_counter() - t) / STEPS * 1e3


def prefill_gflops(config, rows: int, dtype: str) -> list[tuple[tuple[int, int], float, float, float]]:
    """Each of a layer's fused products at `rows` rows (a prefill's batch x length), alone and warm: GFLOP/s of
    ours (weights packed ahead, `cpu_kernels.products.packed_matmul`), XLA's `x @ w` and torch's, best of 5 each."""
    import jax
    import jax.numpy as jnp
    import torch

    kernels = _cpu_kernels()
    if kernels is None:
        sys.exit("--prefill-rows measures the CPU kernels' products: install them (pip install -e ./cpu_kernels)")
    cpu_products = kernels.products

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    jdt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    rng = np.random.default_rng(0)
    results = []
    for k, n in fused_layer_shapes(config):
        x = jnp.asarray(rng.standard_normal((rows, k), np.float32), jdt)
        w = jnp.asarray(rng.standard_normal((k, n), np.float32) * 0.02, jdt)
        panels = jax.jit(cpu_products.pack)(w)
        ours = jax.jit(lambda x, p, n=n: cpu_products.packed_matmul(x, p, n))
        xla = jax.jit(lambda x, w: x @ w)
        xt = torch.from_numpy(np.asarray(x, np.float32)).to(tdt)
        wt = torch.from_numpy(np.asarray(w, np.float32)).to(tdt)
        flop = 2 * rows * k * n / 1e9
        results.append(((k, n), flop / best(lambda: ours(x, panels).block_until_ready()),
                        flop / best(lambda: xla(x, w).block_until_ready()), flop / best(lambda: xt @ wt)))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2_135m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--prefill-rows", type=int, default=0,
                        help="instead of the decode chain: each layer product at this many rows, in GFLOP/s")
    args = parser.parse_args(argv)
    import os

    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    config = get_preset(args.preset)
    print(f"Machine: {machine()}\n")
    if args.prefill_rows:
        print(f"| dtype | product at {args.prefill_rows} rows | ours GFLOP/s | XLA GFLOP/s | torch GFLOP/s |\n"
              "|---|---|---|---|---|")
        for dtype in args.dtypes.split(","):
            for (k, n), ours, xla, theirs in prefill_gflops(config, args.prefill_rows, dtype):
                print(f"| {dtype} | [{args.prefill_rows}, {k}] x [{k}, {n}] | {ours:.0f} | {xla:.0f} | {theirs:.0f} |",
                      flush=True)
        return
    print("| dtype | batch | ours ms/step (XLA, with the CPU kernels where installed) | torch ms/step | our weight GB/s |\n"
          "|---|---|---|---|---|")
    for dtype in args.dtypes.split(","):
        for batch in map(int, args.batches.split(",")):
            xla_ms, nbytes = xla_ms_per_step(config, batch, dtype)
            torch_ms = torch_ms_per_step(config, batch, dtype)
            print(f"| {dtype} | {batch} | {xla_ms:.1f} | {torch_ms:.1f} | {nbytes / xla_ms / 1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()
