"""Metrics tables drawn from a KNOWN saturating law, for tests, demos and power analyses.

A run of size N evaluates at steps 0..steps; D = step * prompts_per_step (prompts), C = phi * N * D
(FLOPs, phi = FLOPs per parameter per prompt), and per seed

    L = exp(-k(N) ln X + E(N)) * exp(noise * eps),   eps ~ N(0, 1) independent per point,

with X = C or D as chosen. Step 0 (C = D = 0) carries the step-1 loss, as a real run's first
evaluation would; fits drop it anyway.
"""

from __future__ import annotations

import numpy as np

from rl_scaling.scaling import law


def synthetic_metrics_table(sizes, k_max: float, n0: float, x_name: str = "D", e0=None,
                            start_loss: float = 0.8, steps: int = 100, seeds: int = 3,
                            noise: float = 0.03, prompts_per_step: int = 64, phi: float = 6e4,
                            variant: str = "base", rng_seed: int = 0) -> dict:
    """A table with columns variant, size, seed, step, C, D, L (rows: sizes x seeds x steps+1).

    Args:
      sizes: parameter counts N.
      k_max, n0: the law's K_max and N_0.
      x_name: "C" or "D": which X the law (and e0) is written in.
      e0: dict size -> E(N); None sets E(N) so that the noiseless L at step 1 is `start_loss`.
      noise: standard deviation of the multiplicative log-normal noise (0.03 ~ 3 %).
      phi: FLOPs per parameter per prompt (C = phi * N * D).
    """
    if x_name not in ("C", "D"):
        raise ValueError(f"x_name must be 'C' or 'D', got {x_name!r}")
    rng = np.random.default_rng(rng_seed)
    step = np.arange(steps + 1)
    cols = {name: [] for name in ("variant", "size", "seed", "step", "C", "D", "L")}
    for n in sizes:
        d = step * float(prompts_per_step)
        c = phi * n * d
        x = c if x_name == "C" else d
        k = law.saturating_k(n, k_max, n0)
        e = np.log(start_loss) + k * np.log(x[1]) if e0 is None else e0[n]
        clean = law.predict_loss(np.where(step == 0, x[1], x), k, e)
        for seed in range(seeds):
            cols["variant"].append(np.full(len(step), variant, dtype=object))
            cols["size"].append(np.full(len(step), float(n)))
            cols["seed"].append(np.full(len(step), seed))
            cols["step"].append(step)
            cols["C"].append(c)
            cols["D"].append(d)
            cols["L"].append(clean * np.exp(noise * rng.standard_normal(len(step))))
    return {name: np.concatenate(parts) for name, parts in cols.items()}
