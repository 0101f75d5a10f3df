"""The law's functional forms against hand-computed numbers."""

import math

import numpy as np
import pytest

from rl_scaling.scaling import law


def test_saturating_k_hand_values():
    # K_max / (1 + N_0 / N): N = N_0 gives half, N = 3 N_0 gives 3/4, N = N_0 / 4 gives 1/5.
    k = law.saturating_k([1e9, 3e9, 0.25e9], k_max=0.8, n0=1e9)
    np.testing.assert_allclose(k, [0.4, 0.6, 0.16], rtol=1e-12)


def test_predict_loss_hand_value():
    # ln L = -0.5 * ln(100) + 1  ->  L = e / 10
    assert law.predict_loss(100.0, 0.5, 1.0) == pytest.approx(math.e / 10, rel=1e-12)
    assert law.predict_log_loss(math.e ** 4, 0.25, 2.0) == pytest.approx(1.0, rel=1e-12)


def test_compute_and_data_intercepts_describe_the_same_curve():
    # With C = phi N D, exp(E_D) D^-k must equal exp(E_C) C^-k at every D.
    n, phi, k, e_d = 2e6, 3e4, 0.37, 1.5
    e_c = law.compute_intercept_from_data_intercept(e_d, k, n, phi)
    assert e_c == pytest.approx(e_d + k * math.log(n * phi))
    d = np.array([64.0, 640.0, 6400.0])
    np.testing.assert_allclose(law.predict_loss(d, k, e_d), law.predict_loss(phi * n * d, k, e_c),
                               rtol=1e-12)
    assert law.data_intercept_from_compute_intercept(e_c, k, n, phi) == pytest.approx(e_d)


def test_alternative_loss_hand_value():
    params = {"l_inf": 0.1, "log10_n0": 6.0, "alpha": 0.5, "ln_lambda_ref": math.log(0.4),
              "gamma_lambda": 1.0, "ln_x0_ref": math.log(100.0), "gamma_x0": 0.0, "beta": 1.0}
    # N = 4e6 = 4 n_ref: floor 0.1 + (1/4)^0.5 = 0.6; lambda = 0.4 * 4 = 1.6; X = X_0 -> half.
    assert law.alternative_loss(4e6, 100.0, params, n_ref=1e6) == pytest.approx(0.6 + 0.8)
