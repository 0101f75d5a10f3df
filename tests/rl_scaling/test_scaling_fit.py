"""Parameter recovery of the saturating-law fit on tables drawn from a KNOWN law.

Tolerances stated once: K_max within 10 %, N_0 within 25 % (relative), under 3 % multiplicative
noise per seed; noiseless data must come back to 1e-4.
"""

import numpy as np
import pytest

from rl_scaling.scaling import alternative, bootstrap, curves, fit, law, synthetic

K_MAX_TOL, N0_TOL = 0.10, 0.25
TINY_SIZES = [1e5, 3e5, 1e6, 3e6, 1e7]                  # the CPU miniature's range
# Non-embedding parameter counts of Qwen2.5 0.5B ... 72B.
PAPER_SIZES = [3.58e8, 1.31e9, 2.77e9, 6.53e9, 1.32e10, 3.12e10, 7.02e10]


def _curves(sizes, k_max, n0, x_name, noise=0.03, seeds=3, rng_seed=0):
    table = synthetic.synthetic_metrics_table(sizes, k_max, n0, x_name=x_name, noise=noise,
                                              seeds=seeds, rng_seed=rng_seed)
    rows = curves.seed_rows_from_table(table, x_name)
    return rows, curves.average_seeds(rows)


@pytest.mark.parametrize("objective", fit.OBJECTIVES)
def test_recovers_known_law_in_data_tiny_sizes(objective):
    _, points = _curves(TINY_SIZES, k_max=0.6, n0=1e6, x_name="D")
    fitted = fit.fit_saturating_law(points, objective)
    assert fitted.objective == objective
    assert fitted.k_max == pytest.approx(0.6, rel=K_MAX_TOL)
    assert fitted.n0 == pytest.approx(1e6, rel=N0_TOL)
    assert fitted.r2_linear > 0.99 and fitted.r2_log > 0.99


@pytest.mark.parametrize("objective", fit.OBJECTIVES)
def test_recovers_known_law_in_compute_paper_sizes(objective):
    _, points = _curves(PAPER_SIZES, k_max=0.45, n0=4e9, x_name="C", rng_seed=1)
    fitted = fit.fit_saturating_law(points, objective, fit.FitBounds(log10_n0=(8.0, 11.0)))
    assert fitted.k_max == pytest.approx(0.45, rel=K_MAX_TOL)
    assert fitted.n0 == pytest.approx(4e9, rel=N0_TOL)
    assert 8.0 <= np.log10(fitted.n0) <= 11.0


@pytest.mark.parametrize("objective", fit.OBJECTIVES)
def test_noiseless_data_is_recovered_exactly(objective):
    truth_e = {n: 0.5 + 0.1 * i for i, n in enumerate(TINY_SIZES)}
    table = synthetic.synthetic_metrics_table(TINY_SIZES, 0.7, 2e6, x_name="D", e0=truth_e,
                                              noise=0.0, seeds=1, steps=30)
    points = curves.average_seeds(curves.seed_rows_from_table(table, "D"))
    fitted = fit.fit_saturating_law(points, objective)
    assert fitted.k_max == pytest.approx(0.7, rel=1e-4)
    assert fitted.n0 == pytest.approx(2e6, rel=1e-4)
    for n, e in truth_e.items():
        assert fitted.e0[n] == pytest.approx(e, abs=1e-4)
    assert fitted.r2_linear == pytest.approx(1.0, abs=1e-9)


def test_free_k_matches_the_law_per_size():
    _, points = _curves(TINY_SIZES, k_max=0.6, n0=1e6, x_name="D")
    free = fit.fit_free_k(points, "linear")
    for n in TINY_SIZES:
        assert free.k[n] == pytest.approx(law.saturating_k(n, 0.6, 1e6), abs=0.02)
    assert free.r2_linear > 0.99


def test_intercepts_for_fixed_k_and_their_bounds():
    # One size, L = exp(2) X^-0.3 exactly: the profiled intercept is 2, or the bound when clipped.
    x = np.array([10.0, 100.0, 1000.0])
    points = curves.Curves(size=np.full(3, 1e6), step=np.arange(1, 4), x=x,
                           loss=law.predict_loss(x, 0.3, 2.0))
    for objective in fit.OBJECTIVES:
        assert fit.fit_intercepts({1e6: 0.3}, points, objective)[1e6] == pytest.approx(2.0)
        assert fit.fit_intercepts({1e6: 0.3}, points, objective, (-1.0, 1.0))[1e6] == 1.0


def test_r_squared_by_hand():
    # mean 2, SS_tot = 2, SS_res = 0.5  ->  R^2 = 0.75
    assert fit.r_squared([1.0, 2.0, 3.0], [1.5, 2.0, 2.5]) == pytest.approx(0.75)


def test_bad_fit_requests_raise():
    _, points = _curves([1e6], k_max=0.6, n0=1e6, x_name="D", seeds=1)
    with pytest.raises(ValueError, match="at least 2 sizes"):
        fit.fit_saturating_law(points)
    with pytest.raises(ValueError, match="objective must be one of"):
        fit.fit_saturating_law(points, "l1")
    with pytest.raises(ValueError, match="empty bounds"):
        fit.FitBounds(log10_n0=(9.0, 8.0)).resolve([1e6])


def test_derived_n0_bounds_follow_the_data():
    resolved = fit.FitBounds().resolve([1e5, 1e7])
    assert resolved.log10_n0 == pytest.approx((3.0, 9.0))


def test_bootstrap_intervals_cover_the_truth():
    # Four independent synthetic studies of 3 seeds each (the paper's count). The t interval must
    # cover the truth in every one; the plain percentile interval is known to be narrower (it
    # under-covers with 3 seeds, see bootstrap.py) but must hold the estimate.
    for study in range(4):
        rows, _ = _curves(TINY_SIZES, k_max=0.6, n0=1e6, x_name="D", seeds=3,
                          rng_seed=200 + study)
        summary = bootstrap.bootstrap_over_seeds(rows, "full", "linear", replicates=20,
                                                 seed=study)
        assert summary["replicates"] == 20
        for name, truth in (("k_max", 0.6), ("n0", 1e6)):
            s = summary[name]
            assert s["t_low"] <= truth <= s["t_high"], (study, name, s)
            assert s["t_low"] < s["low"] <= s["estimate"] <= s["high"] < s["t_high"], (study, s)
        assert 0 < summary["k_max"]["std"] < 0.02


def test_bootstrap_needs_several_seeds():
    rows, _ = _curves(TINY_SIZES, k_max=0.6, n0=1e6, x_name="D", seeds=1)
    with pytest.raises(ValueError, match="needs >= 2 seeds for every size"):
        bootstrap.bootstrap_over_seeds(rows, replicates=5)


def test_alternative_form_fits_data_drawn_from_it():
    truth = {"l_inf": 0.05, "log10_n0": 5.0, "alpha": 0.4, "ln_lambda_ref": np.log(0.5),
             "gamma_lambda": 0.2, "ln_x0_ref": np.log(500.0), "gamma_x0": -0.3, "beta": 0.8}
    x = np.tile(np.arange(1, 61) * 64.0, len(TINY_SIZES))
    size = np.repeat(TINY_SIZES, 60)
    n_ref = float(np.exp(np.mean(np.log(TINY_SIZES))))
    loss = law.alternative_loss(size, x, truth, n_ref)
    loss = loss * np.exp(0.01 * np.random.default_rng(0).standard_normal(loss.shape))
    points = curves.Curves(size=size, step=np.tile(np.arange(1, 61), 5), x=x, loss=loss)
    alt = alternative.fit_alternative_law(points, starts=8)
    assert alt.r2_linear > 0.99
    clean = law.alternative_loss(size, x, truth, n_ref)
    assert np.mean(np.abs(alt.predict(size, x) - clean) / clean) < 0.01
