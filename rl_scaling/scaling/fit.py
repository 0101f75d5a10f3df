"""Fit the saturating law ln L = -k(N) ln X + E(N), k(N) = K_max / (1 + N_0/N), with scipy.

How the optimisation works (the same for both objectives):
  * For fixed (K_max, N_0) every size's best intercept E(N) has a closed form, so the intercepts
    are profiled out: log objective -> E = mean(ln L + k ln X); linear objective -> the
    least-squares amplitude A = exp(E) of L = A X^-k, A = sum(L f) / sum(f^2) with f = X^-k,
    then clipped to the E bounds (exact: the loss is a convex quadratic in A).
  * What is left is a 2-D problem over (K_max, log10 N_0), solved globally with
    `scipy.optimize.differential_evolution` (vectorised population, fixed seed) and polished
    with L-BFGS-B. No lucky start is needed; the search covers the whole box.

Objectives (explicit in every result):
  "linear" - the paper's: mean squared error of L in linear space, each size's curve given equal
             total weight (every point of size s weighs 1 / n_s);
  "log"    - the same weighting on ln L (least squares in log space).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize

from rl_scaling.scaling import law
from rl_scaling.scaling.curves import Curves

OBJECTIVES = ("linear", "log")
OPTIMISER = ("differential_evolution over (K_max, log10 N_0) with L-BFGS-B polish; "
             "per-size intercepts E(N) profiled out in closed form")


@dataclasses.dataclass(frozen=True)
class FitBounds:
    """Box bounds of the fit.

    log10_n0=None derives the N_0 range from the data: [log10 N_min - 2, log10 N_max + 2], so tiny
    CPU models (1e5-1e7 parameters) and the paper's sizes both work. E is unbounded by default:
    with natural logs and X = C in FLOPs, E(N) = ln L + k ln C easily passes 10. The paper's box
    is PAPER_BOUNDS.
    """

    k_max: tuple[float, float] = (0.0, 2.0)
    log10_n0: tuple[float, float] | None = None
    e: tuple[float, float] = (-np.inf, np.inf)

    def resolve(self, sizes) -> "FitBounds":
        """These bounds with log10_n0 filled in from `sizes` (parameters) when it is None."""
        lo_k, hi_k = self.k_max
        if not lo_k < hi_k or not self.e[0] < self.e[1]:
            raise ValueError(f"empty bounds: k_max={self.k_max}, e={self.e}")
        if self.log10_n0 is not None:
            if not self.log10_n0[0] < self.log10_n0[1]:
                raise ValueError(f"empty bounds: log10_n0={self.log10_n0}")
            return self
        logs = np.log10(np.asarray(sizes, dtype=np.float64))
        return dataclasses.replace(self, log10_n0=(float(logs.min() - 2), float(logs.max() + 2)))

    def to_dict(self) -> dict:
        def finite(pair):
            return [float(v) if np.isfinite(v) else None for v in pair] if pair else None

        return {"k_max": finite(self.k_max), "log10_n0": finite(self.log10_n0),
                "e": finite(self.e)}


PAPER_BOUNDS = FitBounds(k_max=(0.0, 2.0), log10_n0=(8.0, 11.0), e=(-10.0, 10.0))


@dataclasses.dataclass(frozen=True)
class SaturatingFit:
    """A fitted law. e0 maps size N (parameters, float) -> E(N) (natural-log units)."""

    k_max: float
    n0: float
    e0: dict
    objective: str
    r2_linear: float
    r2_log: float

    def k(self, n):
        """k(N) for parameter counts `n` (any shape)."""
        return law.saturating_k(n, self.k_max, self.n0)

    def predict(self, n, x):
        """Predicted L at sizes `n` (each one of the fitted sizes) and X = `x`, shape of `x`."""
        n = np.broadcast_to(np.asarray(n, dtype=np.float64), np.shape(x))
        missing = sorted(set(np.unique(n)) - set(self.e0))
        if missing:
            raise KeyError(f"no intercept E(N) for size(s) {missing}; fitted: {sorted(self.e0)}")
        e = np.vectorize(self.e0.__getitem__, otypes=[np.float64])(n) if n.size else n
        return law.predict_loss(x, self.k(n), e)


@dataclasses.dataclass(frozen=True)
class FreeKFit:
    """k and E fitted independently per size (dicts keyed by size N) - no law across sizes."""

    k: dict
    e0: dict
    objective: str
    r2_linear: float
    r2_log: float


def r_squared(observed, predicted) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot of two (P,) arrays."""
    observed = np.asarray(observed, dtype=np.float64)
    ss_tot = np.sum((observed - observed.mean()) ** 2)
    ss_res = np.sum((observed - np.asarray(predicted)) ** 2)
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


@dataclasses.dataclass(frozen=True)
class _Design:
    """Fixed arrays of a fit: P points over S sizes."""

    sizes: np.ndarray      # (S,) parameters
    index: np.ndarray      # (P,) size index of each point
    onehot: np.ndarray     # (P, S)
    count: np.ndarray      # (S,) points per size
    ln_x: np.ndarray       # (P,)
    centre: np.ndarray     # (S,) mean ln X per size (keeps X^-k in range)
    loss: np.ndarray       # (P,)

    @classmethod
    def of(cls, curves: Curves) -> "_Design":
        if len(curves) == 0:
            raise ValueError("no points to fit")
        sizes, index = np.unique(curves.size, return_inverse=True)
        index = index.reshape(-1)
        onehot = np.eye(len(sizes))[index]
        count = onehot.sum(axis=0)
        ln_x = np.log(curves.x)
        return cls(sizes, index, onehot, count, ln_x, (ln_x @ onehot) / count, curves.loss)


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def _profile(k: np.ndarray, d: _Design, objective: str, e_bounds) -> tuple[np.ndarray, np.ndarray]:
    """Best intercepts and the objective for exponents k of shape (M, S).

    Returns E of shape (M, S) and the equal-weight-per-size mean squared error of shape (M,).
    """
    k_p = k[:, d.index]                                      # (M, P)
    dx = d.ln_x - d.centre[d.index]                          # (P,) centred ln X
    if objective == "log":
        e_c = ((np.log(d.loss) + k_p * dx) @ d.onehot) / d.count     # intercept at centred ln X
        e = np.clip(e_c + k * d.centre, *e_bounds)
        resid = np.log(d.loss) - (e - k * d.centre)[:, d.index] + k_p * dx
    else:
        f = np.exp(-k_p * dx)                                # (M, P), order 1
        amp = ((d.loss * f) @ d.onehot) / ((f * f) @ d.onehot)
        e = np.clip(np.log(np.maximum(amp, 1e-300)) + k * d.centre, *e_bounds)
        resid = d.loss - np.exp((e - k * d.centre)[:, d.index]) * f
    per_size = ((resid * resid) @ d.onehot) / d.count        # (M, S)
    return e, per_size.mean(axis=1)


def fit_intercepts(k, curves: Curves, objective: str = "linear",
                   e_bounds=(-np.inf, np.inf)) -> dict:
    """Best E(N) per size for fixed exponents.

    Args:
      k: dict size -> k, or a callable n -> k(n).
      curves: the points to fit.
    Returns:
      dict size -> E(N).
    """
    _check_objective(objective)
    d = _Design.of(curves)
    k_s = np.array([k(n) if callable(k) else k[n] for n in d.sizes], dtype=np.float64)
    e, _ = _profile(k_s[None, :], d, objective, e_bounds)
    return {float(n): float(v) for n, v in zip(d.sizes, e[0])}


def _scores(curves: Curves, predicted) -> tuple[float, float]:
    return (r_squared(curves.loss, predicted),
            r_squared(np.log(curves.loss), np.log(np.maximum(predicted, 1e-300))))


def fit_saturating_law(curves: Curves, objective: str = "linear",
                       bounds: FitBounds = FitBounds(), seed: int = 0) -> SaturatingFit:
    """Fit K_max, N_0 (shared) and E(N) (per size) to seed-averaged curves.

    Args:
      curves: points with X > 0 and L > 0 (see curves.average_seeds), at least 2 sizes.
      objective: "linear" (paper: MSE of L) or "log" (MSE of ln L); equal weight per size.
      bounds: box for K_max, log10 N_0 and E; see FitBounds.
      seed: seed of differential evolution (the result is deterministic given it).
    Returns:
      SaturatingFit with R^2 on L and on ln L over `curves`.
    """
    _check_objective(objective)
    d = _Design.of(curves)
    if len(d.sizes) < 2:
        raise ValueError(f"the saturating law needs at least 2 sizes to fit K_max and N_0, "
                         f"got {len(d.sizes)}: {d.sizes.tolist()}")
    bounds = bounds.resolve(d.sizes)

    def objective_fn(theta):
        theta = np.asarray(theta, dtype=np.float64)
        flat = theta.ndim == 1
        k_max, log10_n0 = (theta[:, None] if flat else theta)       # each (M,)
        k = law.saturating_k(d.sizes[None, :], k_max[:, None], 10.0 ** log10_n0[:, None])
        value = _profile(k, d, objective, bounds.e)[1]
        return value[0] if flat else value

    result = optimize.differential_evolution(
        objective_fn, [bounds.k_max, bounds.log10_n0], seed=seed, popsize=20, maxiter=300,
        tol=1e-10, atol=0.0, polish=True, vectorized=True, updating="deferred")
    k_max, log10_n0 = (float(v) for v in result.x)
    k = law.saturating_k(d.sizes, k_max, 10.0 ** log10_n0)
    e, _ = _profile(k[None, :], d, objective, bounds.e)
    e0 = {float(n): float(v) for n, v in zip(d.sizes, e[0])}
    predicted = law.predict_loss(curves.x, k[d.index], e[0][d.index])
    return SaturatingFit(k_max, float(10.0 ** log10_n0), e0, objective, *_scores(curves, predicted))


def fit_free_k(curves: Curves, objective: str = "linear", k_bounds=(0.0, 2.0),
               e_bounds=(-np.inf, np.inf)) -> FreeKFit:
    """Fit k and E independently for every size (the comparison the saturation curve is judged by).

    Each size's 1-D profiled problem in k is solved by a 401-point grid over `k_bounds` followed
    by a bounded scalar minimisation around the best grid point.
    """
    _check_objective(objective)
    ks, es = {}, {}
    predicted = np.empty(len(curves))
    grid = np.linspace(*k_bounds, 401)
    for n in curves.sizes:
        mask = curves.size == n
        d = _Design.of(curves.select(mask))
        values = _profile(grid[:, None], d, objective, e_bounds)[1]
        i = int(np.argmin(values))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        best = optimize.minimize_scalar(
            lambda k: _profile(np.array([[k]]), d, objective, e_bounds)[1][0],
            bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
        k = float(best.x) if best.fun <= values[i] else float(grid[i])
        e = float(_profile(np.array([[k]]), d, objective, e_bounds)[0][0, 0])
        ks[float(n)], es[float(n)] = k, e
        predicted[mask] = law.predict_loss(curves.x[mask], k, e)
    return FreeKFit(ks, es, objective, *_scores(curves, predicted))
