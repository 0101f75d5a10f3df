"""GRPO's loss is masked by selection (padding values never reach the loss or its gradient), and its two
optional guards: the dual clip (Ye et al. 2020) and the log-ratio clamp."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_scaling.grpo import LOSS_AGGREGATIONS, clipped_policy_loss, get_kl_estimator, grpo_loss

B, T = 3, 6
MASK = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], np.float32)
PADDED = (0, 4)  # a slot with mask 0


def _clean_inputs():
    rng = np.random.default_rng(0)
    old = -rng.uniform(0.5, 3.0, (B, T)).astype(np.float32)
    logp = (old + rng.uniform(-0.4, 0.4, (B, T))).astype(np.float32)
    ref = -rng.uniform(0.5, 3.0, (B, T)).astype(np.float32)
    adv = np.array([1.3, -0.7, 0.4], np.float32)
    return logp, old, ref, adv


def _loss_and_grad(logp, old, ref, adv, **kw):
    def f(lp):
        return grpo_loss(lp, jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(MASK),
                         kl_coef=0.1, **kw)[0]
    loss, grad = jax.value_and_grad(f)(jnp.asarray(logp))
    return np.asarray(loss), np.asarray(grad)


def _todays_loss(logp, old, ref, adv, aggregation):
    """The loss as it was before masking by selection: mask multiplied in, no guards (clean inputs only)."""
    ratio = jnp.exp(logp - jax.lax.stop_gradient(old))
    a = adv[:, None]
    policy_tok = jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 0.8, 1.2))
    kl_tok = get_kl_estimator("k3")(logp, ref)
    if aggregation == "token-mean":
        return jnp.sum(policy_tok * MASK) / jnp.sum(MASK) + 0.1 * jnp.sum(kl_tok * MASK) / jnp.sum(MASK)
    counted = jnp.maximum(jnp.sum(jnp.sum(MASK, 1) > 0), 1.0)
    norm = jnp.maximum(jnp.sum(MASK, 1), 1.0) if aggregation == "seq-mean-token-mean" else T
    policy = jnp.sum(jnp.sum(policy_tok * MASK, 1) / norm) / counted
    kl = jnp.sum(jnp.sum(kl_tok * MASK, 1) / norm) / counted
    return policy + 0.1 * kl


@pytest.mark.parametrize("aggregation", sorted(LOSS_AGGREGATIONS))
def test_defaults_leave_the_loss_bit_identical(aggregation):
    logp, old, ref, adv = _clean_inputs()
    loss, grad = _loss_and_grad(logp, old, ref, adv, aggregation=aggregation)
    want, want_grad = jax.value_and_grad(lambda lp: _todays_loss(lp, old, ref, adv, aggregation))(jnp.asarray(logp))
    np.testing.assert_array_equal(loss, np.asarray(want))
    np.testing.assert_allclose(grad, np.asarray(want_grad), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("which, value", [("ref", 200.0), ("ref", -np.inf), ("old", np.nan), ("old", -300.0),
                                          ("logp", 1e30), ("logp", np.nan), ("logp", -np.inf)])
@pytest.mark.parametrize("aggregation", sorted(LOSS_AGGREGATIONS))
@pytest.mark.parametrize("guards", [{}, {"dual_clip": 3.0, "log_ratio_clamp": 20.0}])
def test_padding_values_never_reach_loss_or_gradient(which, value, aggregation, guards):
    clean = _clean_inputs()
    poisoned = [x.copy() for x in clean]
    poisoned[("logp", "old", "ref").index(which)][PADDED] = value
    loss, grad = _loss_and_grad(*clean, aggregation=aggregation, **guards)
    bad_loss, bad_grad = _loss_and_grad(*poisoned, aggregation=aggregation, **guards)
    assert np.isfinite(bad_loss) and np.isfinite(bad_grad).all()
    np.testing.assert_array_equal(bad_loss, loss)
    np.testing.assert_array_equal(bad_grad, grad)
    assert np.all(grad[MASK == 0] == 0)


def test_metrics_ignore_padding():
    logp, old, ref, adv = _clean_inputs()
    old[PADDED] = -500.0  # ratio e^500 in a padded slot
    _, metrics = grpo_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv),
                           jnp.asarray(MASK))
    assert all(np.isfinite(np.asarray(v)) for v in metrics.values())
    assert float(metrics["ratio_max"]) < 2.0


def _one_token(ratio, adv, **kw):
    old = jnp.array([[-1.0]])
    return clipped_policy_loss(old + math.log(ratio), old, jnp.array([adv]), 0.2, 0.2, **kw)


@pytest.mark.parametrize("ratio, adv, plain, dual", [
    (10.0, -2.0, 20.0, 6.0),  # A < 0, ratio far above 1: capped at c·|A| = 6
    (2.0, -2.0, 4.0, 4.0),  # A < 0, below the cap: unchanged
    (0.5, -2.0, 1.6, 1.6),  # A < 0, clipped below: unchanged
    (10.0, 2.0, -2.4, -2.4),  # A > 0: never touched
    (0.5, 2.0, -1.0, -1.0),
])
def test_dual_clip_caps_negative_advantage_tokens(ratio, adv, plain, dual):
    loss, _ = _one_token(ratio, adv)
    capped, clipped = _one_token(ratio, adv, dual_clip=3.0)
    assert float(loss[0, 0]) == pytest.approx(plain, rel=1e-5)
    assert float(capped[0, 0]) == pytest.approx(dual, rel=1e-5)
    if dual != plain:
        assert bool(clipped[0, 0])  # the capped token gets no gradient and counts as clipped
        grad = jax.grad(lambda lp: clipped_policy_loss(lp, jnp.array([[-1.0]]), jnp.array([adv]), 0.2, 0.2,
                                                       dual_clip=3.0)[0].sum())(jnp.array([[-1.0 + math.log(ratio)]]))
        assert float(grad[0, 0]) == 0.0


def test_dual_clip_through_grpo_loss_and_its_bounds():
    logp = jnp.array([[math.log(10.0)]])
    loss, m = grpo_loss(logp, jnp.zeros((1, 1)), None, jnp.array([-2.0]), jnp.ones((1, 1)), kl_coef=0.0,
                        dual_clip=3.0)
    assert float(loss) == pytest.approx(6.0) and float(m["clip_fraction"]) == 1.0
    with pytest.raises(ValueError, match="dual_clip"):
        _one_token(2.0, -1.0, dual_clip=1.0)


def test_log_ratio_clamp():
    # log-ratio 100: exp overflows float32 to inf without the clamp; clamped at 20 it is e^20
    old = jnp.zeros((1, 2))
    logp = jnp.array([[100.0, 0.1]])
    plain, _ = clipped_policy_loss(logp, old, jnp.array([-1.0]), 0.2, 0.2)
    clamped, _ = clipped_policy_loss(logp, old, jnp.array([-1.0]), 0.2, 0.2, log_ratio_clamp=20.0)
    assert np.isinf(float(plain[0, 0])) and float(clamped[0, 0]) == pytest.approx(math.exp(20.0), rel=1e-5)
    assert float(clamped[0, 1]) == float(plain[0, 1])  # inside [-L, L]: untouched
    grad = jax.grad(lambda lp: clipped_policy_loss(lp, old, jnp.array([-1.0]), 0.2, 0.2,
                                                   log_ratio_clamp=20.0)[0].sum())(logp)
    assert float(grad[0, 0]) == 0.0 and float(grad[0, 1]) != 0.0
