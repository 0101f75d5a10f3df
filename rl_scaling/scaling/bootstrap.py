"""Uncertainty of K_max and N_0 from seed-to-seed variation: a bootstrap over seeds.

Each replicate resamples, independently per size, that size's seeds with replacement, averages
the drawn seeds per (size, step) and re-runs the same protocol (so an inter/intra bootstrap refits
exactly what the point estimate fitted).

Two intervals are reported per parameter:
  low/high     - the plain percentile interval of the refits. With the paper's 3 seeds it is too
                 narrow: resampling n seeds shrinks the variance by (n-1)/n and the tails rest on
                 few distinct draws; on synthetic tables with 3-8 seeds it covered the truth in
                 ~75 % of cases at a nominal 95 %.
  t_low/t_high - estimate -/+ t_{n-1} * sd_boot * sqrt(n / (n-1)), n the fewest seeds of any
                 size (N_0 on the log10 scale). Conservative with few seeds; use this one to claim
                 a difference.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from rl_scaling.scaling import curves as curves_lib
from rl_scaling.scaling import protocols


def _summary(estimate: float, values, level: float, n_seeds: int) -> dict:
    values = np.asarray(values, dtype=np.float64)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    std = float(values.std(ddof=1))
    half = stats.t.ppf(0.5 + level / 2, df=n_seeds - 1) * std * np.sqrt(n_seeds / (n_seeds - 1))
    return {"estimate": estimate, "mean": float(values.mean()), "std": std,
            "low": float(low), "high": float(high),
            "t_low": float(estimate - half), "t_high": float(estimate + half)}


def bootstrap_over_seeds(rows: curves_lib.SeedRows, protocol: str = "full",
                         objective: str = "linear", bounds=None, replicates: int = 100,
                         seed: int = 0, fraction: float = 0.25, level: float = 0.95) -> dict:
    """Bootstrap K_max and N_0.

    Args:
      rows: per-seed points (curves.seed_rows_from_table); every size needs >= 2 seeds.
      replicates: number of bootstrap draws B.
      level: coverage of both intervals.
    Returns:
      {"replicates", "level", "seeds_per_size", "k_max", "n0", "log10_n0"}; each parameter
      entry holds "estimate" (fit on all seeds), "mean", "std" (over the B refits), "low"/"high"
      (percentile interval) and "t_low"/"t_high" (see the module docstring).
    """
    if replicates < 2:
        raise ValueError(f"bootstrap needs at least 2 replicates, got {replicates}")
    seeds_per_size = {float(n): len(np.unique(rows.seed[rows.size == n]))
                      for n in np.unique(rows.size)}
    n_seeds = min(seeds_per_size.values())
    if n_seeds < 2:
        raise ValueError(f"bootstrap over seeds needs >= 2 seeds for every size; seeds per size: "
                         f"{seeds_per_size}")
    kwargs = {} if bounds is None else {"bounds": bounds}

    def refit(weights=None):
        points = curves_lib.average_seeds(rows, weights)
        return protocols.run_protocol(points, protocol, objective, seed=seed, fraction=fraction,
                                      **kwargs).fit

    point = refit()
    rng = np.random.default_rng(seed)
    draws = [refit(curves_lib.bootstrap_seed_weights(rows, rng)) for _ in range(replicates)]
    k_max = [f.k_max for f in draws]
    log10_n0 = np.log10([f.n0 for f in draws])
    log_summary = _summary(float(np.log10(point.n0)), log10_n0, level, n_seeds)
    n0_summary = _summary(point.n0, 10.0 ** log10_n0, level, n_seeds)
    n0_summary.update(t_low=10.0 ** log_summary["t_low"], t_high=10.0 ** log_summary["t_high"])
    return {"replicates": replicates, "level": level, "seeds_per_size": seeds_per_size,
            "k_max": _summary(point.k_max, k_max, level, n_seeds),
            "n0": n0_summary, "log10_n0": log_summary}
