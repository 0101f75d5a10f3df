"""Inter- and intra-model protocols on tables drawn from a KNOWN law (K_max 0.6, N_0 1e6).

Held-out prediction must be good: MAPE of L below 5 % (noise is 3 % per seed, 3 seeds averaged).
"""

import numpy as np
import pytest

from rl_scaling.scaling import curves, fit, law, protocols, synthetic

SIZES = [1e5, 3e5, 1e6, 3e6, 1e7]


@pytest.fixture(scope="module")
def points():
    table = synthetic.synthetic_metrics_table(SIZES, 0.6, 1e6, x_name="D", noise=0.03, seeds=3,
                                              rng_seed=7)
    return curves.average_seeds(curves.seed_rows_from_table(table, "D"))


@pytest.mark.parametrize("objective", fit.OBJECTIVES)
def test_inter_extrapolates_to_the_largest_size(points, objective):
    result = protocols.run_protocol(points, "inter", objective)
    assert set(result.train.sizes) == set(SIZES[:-1])
    assert set(result.held_out.sizes) == {1e7}
    assert result.fit.k_max == pytest.approx(0.6, rel=0.10)
    assert result.fit.n0 == pytest.approx(1e6, rel=0.25)
    assert result.details["k_extrapolated"] == pytest.approx(law.saturating_k(1e7, 0.6, 1e6),
                                                             rel=0.05)
    errors = result.errors()
    assert errors["mape"] < 0.05
    assert errors["per_size"][1e7]["points"] == 100


@pytest.mark.parametrize("objective", fit.OBJECTIVES)
def test_intra_predicts_the_rest_of_every_curve(points, objective):
    result = protocols.run_protocol(points, "intra", objective, fraction=0.25)
    assert len(result.train) == 5 * 25 and len(result.held_out) == 5 * 75
    assert result.train.step.max() == 25 and result.held_out.step.min() == 26
    assert result.fit.k_max == pytest.approx(0.6, rel=0.10)
    assert result.fit.n0 == pytest.approx(1e6, rel=0.25)
    assert result.errors()["mape"] < 0.05


def test_full_has_no_held_out_part(points):
    result = protocols.run_protocol(points, "full")
    assert result.held_out is None and result.errors() == {}


def test_prediction_errors_by_hand():
    errors = protocols.prediction_errors([1.0, 2.0], [1.1, 1.8])
    assert errors["rmse"] == pytest.approx(np.sqrt((0.01 + 0.04) / 2))
    assert errors["mape"] == pytest.approx(0.1)


def test_inter_needs_three_sizes(points):
    two = points.select(points.size <= 3e5)
    with pytest.raises(ValueError, match="'inter' needs at least 3 sizes"):
        protocols.run_protocol(two, "inter")
    with pytest.raises(ValueError, match="protocol must be one of"):
        protocols.run_protocol(points, "extra")
