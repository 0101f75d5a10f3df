"""Fitting protocols of the study: full, inter-model and intra-model.

  full  - fit every size and every point.
  inter - fit on all sizes but the largest; extrapolate k(N_largest) from the fitted K_max, N_0;
          re-fit only the largest size's intercept on its own curve (as the paper did, k fixed);
          predict its curve and report the error.
  intra - fit on the first `fraction` (~25 %) of every size's evaluation points, predict the rest.

Prediction errors on the held-out points: RMSE of L (absolute, same units as L) and MAPE of L
(mean |pred - obs| / obs, as a fraction), overall and per size.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rl_scaling.scaling import fit as fit_lib
from rl_scaling.scaling.curves import Curves, split_early

PROTOCOLS = ("full", "inter", "intra")


@dataclasses.dataclass(frozen=True)
class ProtocolResult:
    """The fitted law, the points it was fitted on and, for inter/intra, the held-out prediction.

    held_out/predicted are None for "full"; predicted has the shape (H,) of held_out's points.
    """

    protocol: str
    fit: fit_lib.SaturatingFit
    train: Curves
    held_out: Curves | None = None
    predicted: np.ndarray | None = None
    details: dict = dataclasses.field(default_factory=dict)

    def errors(self) -> dict:
        """{"rmse", "mape", "per_size": {N: {"rmse", "mape", "points"}}} on the held-out points."""
        if self.held_out is None:
            return {}
        out = prediction_errors(self.held_out.loss, self.predicted)
        out["per_size"] = {
            float(n): {**prediction_errors(self.held_out.loss[m], self.predicted[m]),
                       "points": int(m.sum())}
            for n in self.held_out.sizes for m in [self.held_out.size == n]}
        return out


def prediction_errors(observed, predicted) -> dict:
    """RMSE (units of L) and MAPE (fraction) of predicted against observed L, both shape (H,)."""
    observed = np.asarray(observed, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    return {"rmse": float(np.sqrt(np.mean((predicted - observed) ** 2))),
            "mape": float(np.mean(np.abs(predicted - observed) / observed))}


def fit_full(curves: Curves, objective="linear", bounds=fit_lib.FitBounds(),
             seed=0) -> ProtocolResult:
    """Fit all points."""
    fitted = fit_lib.fit_saturating_law(curves, objective, bounds, seed)
    return ProtocolResult("full", fitted, curves)


def fit_inter(curves: Curves, objective="linear", bounds=fit_lib.FitBounds(),
              seed=0) -> ProtocolResult:
    """Hold out the largest size; see the module docstring. Needs at least 3 sizes."""
    sizes = curves.sizes
    if len(sizes) < 3:
        raise ValueError(f"protocol 'inter' needs at least 3 sizes (2 to fit K_max and N_0, the "
                         f"largest held out), got {len(sizes)}: {sizes.tolist()}")
    largest = sizes[-1]
    train, held_out = curves.select(curves.size < largest), curves.of_size(largest)
    fitted = fit_lib.fit_saturating_law(train, objective, bounds, seed)
    e_largest = fit_lib.fit_intercepts(fitted.k, held_out, objective, bounds.e)
    combined = dataclasses.replace(fitted, e0={**fitted.e0, **e_largest})
    free = fit_lib.fit_free_k(held_out, objective, bounds.k_max, bounds.e)
    details = {"held_out_size": float(largest),
               "k_extrapolated": float(fitted.k(largest)),
               "k_free_fit": free.k[float(largest)]}
    return ProtocolResult("inter", combined, train, held_out,
                          combined.predict(held_out.size, held_out.x), details)


def fit_intra(curves: Curves, objective="linear", bounds=fit_lib.FitBounds(), seed=0,
              fraction: float = 0.25) -> ProtocolResult:
    """Fit the first `fraction` of every size's points, predict the rest."""
    early, late = split_early(curves, fraction)
    train, held_out = curves.select(early), curves.select(late)
    fitted = fit_lib.fit_saturating_law(train, objective, bounds, seed)
    return ProtocolResult("intra", fitted, train, held_out,
                          fitted.predict(held_out.size, held_out.x), {"fraction": fraction})


def run_protocol(curves: Curves, protocol: str, objective: str = "linear",
                 bounds=fit_lib.FitBounds(), seed: int = 0,
                 fraction: float = 0.25) -> ProtocolResult:
    """Dispatch to fit_full / fit_inter / fit_intra by name."""
    if protocol == "full":
        return fit_full(curves, objective, bounds, seed)
    if protocol == "inter":
        return fit_inter(curves, objective, bounds, seed)
    if protocol == "intra":
        return fit_intra(curves, objective, bounds, seed, fraction)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
