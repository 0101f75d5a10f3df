"""Finding 4, data reuse: final held-out L against the repeat count tau at a fixed number of training samples.

The data-reuse grid (`configs/grids/data_reuse.py`, the miniature's reuse arm) trains every size on the same
number of prompts, a difficulty-stratified subset of samples/tau problems repeated tau times
(`rl_scaling.data.reuse_subset`). Per size, `fit_reuse` fits the final L of every run (seeds kept apart)
with a line in ln tau,

    L_final(tau) = a + b ln tau,

and compares the fitted rise of L over the tau range, b ln(tau_max / tau_min), with what RL gained at the
smallest tau, L(step 0) - L_final(tau_min) (seed means). The paper's finding ("re-using problems is nearly as
good as fresh ones; mild degradation only at very high repeat counts") is called

  - "shown" when the rise is below a quarter of that gain (RISE_SHARE),
  - "not shown" when it is not,
  - "not resolved" when the gain is not positive or the 95 % interval of the rise is wider than the gain
    (the seeds' noise could hide a loss of the whole gain).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

RISE_SHARE = 0.25
LEVEL = 0.95


def final_points(table: dict, tau_column: str = "tau") -> dict[float, dict]:
    """{N: {"tau", "seed", "L_final", "L0"}}: one entry per run (arrays of shape [runs]), from a gathered table
    (columns size, seed, step, L and `tau_column`); L0 is the run's step-0 L (NaN when it has none)."""
    size, tau, seed = (np.asarray(table[k], np.float64) for k in ("size", tau_column, "seed"))
    step, loss = np.asarray(table["step"]), np.asarray(table["L"], np.float64)
    out = {}
    for n in np.unique(size):
        runs = sorted({(t, s) for t, s in zip(tau[size == n], seed[size == n])})
        finals, starts = [], []
        for t, s in runs:
            rows = (size == n) & (tau == t) & (seed == s)
            finals.append(loss[rows][step[rows] == step[rows].max()].mean())
            first = rows & (step == 0)
            starts.append(loss[first].mean() if first.any() else np.nan)
        out[float(n)] = {"tau": np.array([t for t, _ in runs]), "seed": np.array([s for _, s in runs]),
                         "L_final": np.array(finals), "L0": np.array(starts)}
    return out


def line_fit(x, y, level: float = LEVEL) -> dict:
    """Least squares y = a + b x: {"a", "b", "b_low", "b_high"} (t interval of b; None with < 3 points)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a line needs >= 2 distinct x values, got {x.tolist()}")
    b, a = np.polyfit(x, y, 1)
    low = high = None
    if len(x) > 2:
        residual = y - (a + b * x)
        se = np.sqrt(residual @ residual / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
        half = stats.t.ppf(0.5 + level / 2, df=len(x) - 2) * se
        low, high = float(b - half), float(b + half)
    return {"a": float(a), "b": float(b), "b_low": low, "b_high": high}


def verdict(gain: float, rise: float, rise_low: float | None, rise_high: float | None) -> str:
    """'shown' / 'not shown' / 'not resolved' (module docstring) for one size."""
    if not gain > 0 or rise_low is None or (rise_high - rise_low) > gain:
        return "not resolved"
    return "shown" if rise < RISE_SHARE * gain else "not shown"


def fit_reuse(table: dict, tau_column: str = "tau") -> dict:
    """The reuse fit of every size of a gathered table: {"sizes": {N: {...}}, "rule": str}.

    Per size (key: N as float): "taus", "mean_L_final" (seed means, by tau), "runs" (tau, seed, L_final
    lists), "L0" (seed mean of step-0 L), "line" (line_fit of L_final on ln tau), "gain" (L0 - mean L_final at
    the smallest tau), "rise" and "rise_low"/"rise_high" (b ln(tau_max/tau_min) and its interval),
    "kept" (share of the gain left at the largest tau: (L0 - L_final(tau_max)) / gain), "verdict".
    """
    sizes = {}
    for n, p in final_points(table, tau_column).items():
        taus = np.unique(p["tau"])
        means = [float(p["L_final"][p["tau"] == t].mean()) for t in taus]
        line = line_fit(np.log(p["tau"]), p["L_final"])
        span = float(np.log(taus.max() / taus.min()))
        l0 = float(np.nanmean(p["L0"])) if np.isfinite(p["L0"]).any() else float("nan")
        gain = l0 - means[0]
        rise = line["b"] * span
        low = None if line["b_low"] is None else line["b_low"] * span
        high = None if line["b_high"] is None else line["b_high"] * span
        sizes[n] = {"taus": taus.tolist(), "mean_L_final": means,
                    "runs": {"tau": p["tau"].tolist(), "seed": p["seed"].tolist(), "L_final": p["L_final"].tolist()},
                    "L0": l0, "line": line, "gain": gain, "rise": rise, "rise_low": low, "rise_high": high,
                    "kept": (l0 - means[-1]) / gain if gain > 0 else None,
                    "verdict": verdict(gain, rise, low, high)}
    rule = (f"shown: the fitted rise of final L over the tau range is below {RISE_SHARE:g} x the gain of RL at the "
            f"smallest tau; not resolved: no gain, or the {LEVEL:.0%} interval of the rise is wider than the gain")
    return {"sizes": sizes, "rule": rule}
