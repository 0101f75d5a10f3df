"""rl_scaling.scaling.reuse: final L against tau, the line in ln tau and the finding-4 verdict, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rl_scaling.scaling import plots, reuse


def _table(final_by_run: dict, start: float = 0.6) -> dict:
    """A gathered table: every (size, tau, seed) run evaluated at steps 0, 20 and 40; L(40) = the given value."""
    columns = {k: [] for k in ("size", "tau", "seed", "step", "L")}
    for (size, tau, seed), final in final_by_run.items():
        for step, loss in ((0, start), (20, (start + final) / 2), (40, final)):
            for key, value in zip(columns, (size, tau, seed, step, loss)):
                columns[key].append(value)
    return {k: np.asarray(v, np.float64) for k, v in columns.items()}


def test_final_points_take_each_runs_last_and_first_evaluation():
    table = _table({(1e4, 1, 0): 0.5, (1e4, 4, 0): 0.55, (1e4, 1, 1): 0.45})
    points = reuse.final_points(table)[1e4]
    np.testing.assert_array_equal(points["tau"], [1, 1, 4])
    np.testing.assert_array_equal(points["seed"], [0, 1, 0])
    np.testing.assert_allclose(points["L_final"], [0.5, 0.45, 0.55])
    np.testing.assert_allclose(points["L0"], [0.6, 0.6, 0.6])


def test_line_fit_matches_hand_least_squares():
    x = np.log([1, 2, 4, 8])
    fit = reuse.line_fit(x, 0.3 + 0.02 * x)
    assert fit["a"] == pytest.approx(0.3) and fit["b"] == pytest.approx(0.02)
    assert fit["b_low"] == pytest.approx(0.02, abs=1e-9) and fit["b_high"] == pytest.approx(0.02, abs=1e-9)
    # y = 0, 1, 0, 1 on x = 0..3: b = 0.2 (hand: Sxy 1 / Sxx 5), residual SS 0.8, se = sqrt(0.8 / 2 / 5)
    noisy = reuse.line_fit([0, 1, 2, 3], [0, 1, 0, 1])
    half = 4.302652729911275 * np.sqrt(0.08)  # t(0.975, 2 dof)
    assert noisy["b"] == pytest.approx(0.2)
    assert (noisy["b_low"], noisy["b_high"]) == pytest.approx((0.2 - half, 0.2 + half))
    assert reuse.line_fit([0, 1], [1, 2])["b_low"] is None  # two points: no interval
    with pytest.raises(ValueError, match="distinct"):
        reuse.line_fit([1, 1, 1], [0, 1, 2])


def test_verdict_rules():
    assert reuse.verdict(gain=0.2, rise=0.02, rise_low=-0.03, rise_high=0.07) == "shown"
    assert reuse.verdict(gain=0.2, rise=0.08, rise_low=0.05, rise_high=0.11) == "not shown"
    assert reuse.verdict(gain=0.2, rise=0.0, rise_low=-0.15, rise_high=0.15) == "not resolved"  # width 0.3 > gain
    assert reuse.verdict(gain=-0.01, rise=0.0, rise_low=-0.01, rise_high=0.01) == "not resolved"  # RL gained nothing
    assert reuse.verdict(gain=0.2, rise=0.0, rise_low=None, rise_high=None) == "not resolved"


def test_fit_reuse_finds_a_flat_and_a_rising_size():
    taus, seeds = (1, 2, 4, 8, 16), (0, 1)
    wiggle = {0: 0.004, 1: -0.004}
    runs = {(1e4, t, s): 0.40 + wiggle[s] for t in taus for s in seeds}  # reuse costs nothing
    runs.update({(1e5, t, s): 0.30 + 0.05 * np.log(t) + wiggle[s] for t in taus for s in seeds})  # it costs
    rep = reuse.fit_reuse(_table(runs))
    flat, rising = rep["sizes"][1e4], rep["sizes"][1e5]
    assert flat["taus"] == list(map(float, taus)) and flat["mean_L_final"] == pytest.approx([0.40] * 5)
    assert flat["gain"] == pytest.approx(0.2) and flat["rise"] == pytest.approx(0.0, abs=1e-9)
    assert flat["kept"] == pytest.approx(1.0) and flat["verdict"] == "shown"
    assert rising["rise"] == pytest.approx(0.05 * np.log(16))
    assert rising["gain"] == pytest.approx(0.3)
    assert rising["kept"] == pytest.approx((0.6 - 0.30 - 0.05 * np.log(16)) / 0.3)
    assert rising["verdict"] == "not shown"  # rise 0.139 >= 0.25 x 0.3
    assert "0.25" in rep["rule"]
    png = plots.figure_png(plots.plot_reuse_fit(rep))
    assert png[:4] == b"\x89PNG" and len(png) > 5000
