"""Fit of the appendix form L = L_inf + (N_0/N)^alpha + lambda(N) / (1 + (X / X_0(N))^beta).

lambda(N) and X_0(N) are power laws in N around n_ref (see law.alternative_loss). Objective: the
paper's linear-space MSE of L with equal total weight per size. Eight parameters and a rugged
surface, so: multi-start `scipy.optimize.least_squares` (trust-region reflective, box bounds)
from a scrambled Sobol design over the box, keeping the best. Its parameters are not all well
identified (L_inf trades against (N_0/N)^alpha); compare it by R^2 and predictions, not by value.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize, stats

from rl_scaling.scaling import law
from rl_scaling.scaling.curves import Curves
from rl_scaling.scaling.fit import r_squared


@dataclasses.dataclass(frozen=True)
class AlternativeFit:
    """params: the eight values of law.ALTERNATIVE_PARAMS; n_ref: reference size (parameters)."""

    params: dict
    n_ref: float
    r2_linear: float
    r2_log: float

    def predict(self, n, x):
        """Predicted L at sizes `n` and X = `x` (broadcast)."""
        return law.alternative_loss(n, x, self.params, self.n_ref)

    def to_dict(self) -> dict:
        return {"form": "L = L_inf + (N_0/N)^alpha + lambda(N) / (1 + (X / X_0(N))^beta); "
                        "lambda(N) = exp(ln_lambda_ref) (N/n_ref)^gamma_lambda, "
                        "X_0(N) = exp(ln_x0_ref) (N/n_ref)^gamma_x0",
                "params": dict(self.params), "n_ref": self.n_ref,
                "r2": {"L": self.r2_linear, "log_L": self.r2_log}}


def _box(curves: Curves) -> np.ndarray:
    """(8, 2) bounds in the order of law.ALTERNATIVE_PARAMS, derived from the data's range."""
    log_n = np.log10(curves.sizes)
    ln_x = np.log(curves.x)
    return np.array([
        [0.0, float(curves.loss.max())],                   # l_inf
        [log_n.min() - 3, log_n.max() + 1],                # log10_n0
        [0.01, 3.0],                                        # alpha
        [-8.0, 2.0],                                        # ln_lambda_ref
        [-3.0, 3.0],                                        # gamma_lambda
        [ln_x.min() - 5, ln_x.max() + 5],                   # ln_x0_ref
        [-3.0, 3.0],                                        # gamma_x0
        [0.05, 5.0],                                        # beta
    ])


def fit_alternative_law(curves: Curves, starts: int = 16, seed: int = 0) -> AlternativeFit:
    """Fit the appendix form to seed-averaged curves (X = C or D, at least 2 sizes)."""
    sizes = curves.sizes
    if len(sizes) < 2:
        raise ValueError(f"the alternative form needs at least 2 sizes, got {sizes.tolist()}")
    n_ref = float(np.exp(np.mean(np.log(sizes))))
    _, index, count = np.unique(curves.size, return_inverse=True, return_counts=True)
    weight = 1.0 / np.sqrt(count[index.reshape(-1)] * len(sizes))     # equal weight per size
    box = _box(curves)

    def residuals(theta):
        params = dict(zip(law.ALTERNATIVE_PARAMS, theta))
        with np.errstate(over="ignore", invalid="ignore"):
            pred = law.alternative_loss(curves.size, curves.x, params, n_ref)
        return np.nan_to_num((pred - curves.loss) * weight, nan=1e3, posinf=1e3, neginf=-1e3)

    design = stats.qmc.Sobol(d=len(box), scramble=True, seed=seed).random(starts)
    best = None
    for u in design:
        start = box[:, 0] + u * (box[:, 1] - box[:, 0])
        result = optimize.least_squares(residuals, start, bounds=(box[:, 0], box[:, 1]),
                                        method="trf", x_scale="jac", max_nfev=2000)
        if best is None or result.cost < best.cost:
            best = result
    params = {k: float(v) for k, v in zip(law.ALTERNATIVE_PARAMS, best.x)}
    pred = law.alternative_loss(curves.size, curves.x, params, n_ref)
    return AlternativeFit(params, n_ref, r_squared(curves.loss, pred),
                          r_squared(np.log(curves.loss), np.log(np.maximum(pred, 1e-300))))
