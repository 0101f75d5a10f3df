"""Budget planner: with a compute (or data) budget X, which model size reaches the lowest L?

For every candidate size N the fitted law predicts L(N, X) = exp(-k(N) ln X + E(N)); k(N) comes
from K_max and N_0 and exists for any N. E(N) is only known at fitted sizes, so:
  * by default the candidates are exactly the fitted sizes;
  * other sizes get E(N) by linear interpolation in ln N between the two neighbouring fitted
    sizes; sizes outside the fitted range are refused (the intercept is not extrapolated).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rl_scaling.scaling import law


@dataclasses.dataclass(frozen=True)
class PlanRow:
    """Prediction for one size: N (parameters), k(N), E(N) and its source, predicted L."""

    size: float
    k: float
    e0: float
    e0_source: str   # "fitted" or "interpolated"
    loss: float


def intercept_at(fit, n: float) -> tuple[float, str]:
    """E(N) at size `n`: the fitted value, or a ln N interpolation inside the fitted range."""
    sizes = np.array(sorted(fit.e0))
    close = np.isclose(sizes, n, rtol=1e-9, atol=0.0)
    if close.any():
        return fit.e0[float(sizes[close][0])], "fitted"
    if not sizes[0] < n < sizes[-1]:
        raise ValueError(f"size {n:g} is outside the fitted sizes [{sizes[0]:g}, {sizes[-1]:g}]: "
                         f"its intercept E(N) cannot be interpolated")
    e = np.array([fit.e0[float(s)] for s in sizes])
    return float(np.interp(np.log(n), np.log(sizes), e)), "interpolated"


def plan_budget(fit, budget: float, sizes=None) -> list[PlanRow]:
    """Predicted L of every candidate size at X = budget, sorted by size.

    Args:
      fit: a SaturatingFit (or anything with k_max, n0, e0, k()).
      budget: the compute (FLOPs) or data (prompts) budget, in the X the law was fitted in.
      sizes: candidate parameter counts; None = the fitted sizes.
    """
    if not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be positive and finite, got {budget}")
    candidates = sorted(fit.e0) if sizes is None else sorted(float(n) for n in sizes)
    if not candidates:
        raise ValueError("no candidate sizes")
    rows = []
    for n in candidates:
        if n <= 0:
            raise ValueError(f"sizes must be positive parameter counts, got {n}")
        e0, source = intercept_at(fit, n)
        k = float(law.saturating_k(n, fit.k_max, fit.n0))
        rows.append(PlanRow(n, k, e0, source, float(law.predict_loss(budget, k, e0))))
    return rows


def best_size(rows: list[PlanRow]) -> PlanRow:
    """The row with the lowest predicted L."""
    return min(rows, key=lambda r: r.loss)


def format_plan(rows: list[PlanRow], budget, x_name: str) -> str:
    """A plain-text table of the plan, the best size marked with '*'. `budget`: one number for every row, or
    one per row (a budget that converts to a different X per size, such as chip-hours to C) as a column."""
    best = best_size(rows)
    per_row = isinstance(budget, (list, tuple))
    head = f"budget {x_name} per size (column {x_name})" if per_row else f"budget {x_name} = {budget:.4g}"
    extra = f" {x_name:>12}" if per_row else ""
    lines = [head, f"  {'size N':>12}{extra} {'k(N)':>8} {'E(N)':>9} {'E from':>12} {'predicted L':>12}"]
    for i, r in enumerate(rows):
        mark = "*" if r is best else " "
        x = f" {budget[i]:>12.4g}" if per_row else ""
        lines.append(f"{mark} {r.size:>12.4g}{x} {r.k:>8.4f} {r.e0:>9.4f} {r.e0_source:>12} "
                     f"{r.loss:>12.4f}")
    lines.append(f"best: N = {best.size:.4g} with predicted L = {best.loss:.4f}")
    return "\n".join(lines)
