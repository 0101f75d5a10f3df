"""The functional forms of the RL post-training scaling law (no fitting here).

Main law (arXiv 2509.25300), natural logarithms throughout:

    ln L(N, X) = -k(N) * ln X + E(N),        X in {C, D}
    k(N)       = K_max / (1 + N_0 / N)

L is the held-out error (1 - pass@1, dimensionless), N the parameter count, X either the training
compute C (FLOPs) or the data D (prompts consumed). E(N) is one free intercept per model size.

Appendix form, offered for comparison (see `alternative_loss` for the parameterisation we chose).
"""

from __future__ import annotations

import numpy as np


def saturating_k(n, k_max: float, n0: float):
    """Learning-efficiency exponent k(N) = K_max / (1 + N_0 / N).

    Args:
      n: parameter counts, any shape (parameters).
      k_max: the saturation value K_max (dimensionless).
      n0: the half-saturation size N_0 (parameters).
    Returns:
      k(N), same shape as `n`.
    """
    n = np.asarray(n, dtype=np.float64)
    return k_max / (1.0 + n0 / n)


def predict_log_loss(x, k, e0):
    """ln L = -k * ln X + E, broadcasting over all arguments.

    Args:
      x: compute (FLOPs) or data (prompts), > 0.
      k: the exponent k(N) of the size(s).
      e0: the intercept E(N) of the size(s) (natural-log units).
    """
    return -np.asarray(k) * np.log(np.asarray(x, dtype=np.float64)) + np.asarray(e0)


def predict_loss(x, k, e0):
    """L = exp(E) * X^(-k); see `predict_log_loss`."""
    return np.exp(predict_log_loss(x, k, e0))


def compute_intercept_from_data_intercept(e_data, k, n, phi):
    """E_C(N) = E_D(N) + k(N) * ln(N * phi), valid when C = phi * N * D.

    If every prompt costs phi FLOPs per parameter (e.g. phi = 6 * G * tokens per sequence), the
    compute law and the data law share k(N) and differ only in the intercept.

    Args:
      e_data: E_D(N), the intercept of the law in D.
      k: k(N) (shared between the two laws).
      n: the parameter count N.
      phi: FLOPs per parameter per prompt (C / (N * D)).
    """
    return np.asarray(e_data) + np.asarray(k) * np.log(np.asarray(n, dtype=np.float64) * phi)


def data_intercept_from_compute_intercept(e_compute, k, n, phi):
    """Inverse of `compute_intercept_from_data_intercept`: E_D = E_C - k * ln(N * phi)."""
    return np.asarray(e_compute) - np.asarray(k) * np.log(np.asarray(n, dtype=np.float64) * phi)


# Appendix form ------------------------------------------------------------------------------------

ALTERNATIVE_PARAMS = ("l_inf", "log10_n0", "alpha", "ln_lambda_ref", "gamma_lambda",
                      "ln_x0_ref", "gamma_x0", "beta")


def alternative_loss(n, x, params: dict, n_ref: float):
    """Appendix form L(N, X) = L_inf + (N_0/N)^alpha + lambda(N) / (1 + (X / X_0(N))^beta).

    The paper leaves lambda(N) and X_0(N) (its D_0(N)) open; we take power laws in N around a
    reference size n_ref (the geometric mean of the fitted sizes, for conditioning):

        lambda(N) = exp(ln_lambda_ref) * (N / n_ref)^gamma_lambda     (error RL can remove)
        X_0(N)    = exp(ln_x0_ref)     * (N / n_ref)^gamma_x0         (X at half of that removal)

    Args:
      n: parameter counts, broadcastable with `x`.
      x: compute (FLOPs) or data (prompts), > 0.
      params: the eight values named in ALTERNATIVE_PARAMS.
      n_ref: the reference size (parameters).
    """
    n = np.asarray(n, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    rel = n / n_ref
    lam = np.exp(params["ln_lambda_ref"]) * rel ** params["gamma_lambda"]
    x0 = np.exp(params["ln_x0_ref"]) * rel ** params["gamma_x0"]
    floor = params["l_inf"] + (10.0 ** params["log10_n0"] / n) ** params["alpha"]
    return floor + lam / (1.0 + (x / x0) ** params["beta"])
