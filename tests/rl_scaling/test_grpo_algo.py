"""GRPO algorithm core against hand-computed numbers and independent references (scipy)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from rl_scaling.grpo import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    clipped_policy_loss,
    get_advantage_estimator,
    get_kl_estimator,
    get_loss_aggregation,
    group_advantages,
    grpo_loss,
    k1_kl,
    k2_kl,
    k3_kl,
    token_entropy,
    token_logprobs,
    zero_variance_group_fraction,
)

# Four groups of G = 4 binary rewards, samples of one prompt adjacent.
REWARDS = np.array([1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0], dtype=np.float32)


# ----------------------------------------------------------------------------- advantages
def test_group_advantages_unbiased_std_by_hand():
    # [1,0,0,1]: mean .5, Σ(r-mean)^2 = 1, unbiased var 1/3, std .57735 -> ±.5/.57735 = ±.866025
    # [1,1,1,1] and [0,0,0,0]: zero spread -> 0 (eps keeps it from 0/0)
    # [1,0,0,0]: mean .25, Σ(r-mean)^2 = .75, var .25, std .5 -> [1.5, -.5, -.5, -.5]
    expected = [0.866025, -0.866025, -0.866025, 0.866025, 0, 0, 0, 0, 0, 0, 0, 0, 1.5, -0.5, -0.5, -0.5]
    adv = group_advantages(jnp.asarray(REWARDS), group_size=4)
    assert adv.shape == (16,)
    np.testing.assert_allclose(np.asarray(adv), expected, atol=1e-5)
    assert not np.isnan(np.asarray(adv)).any()


def test_group_advantages_population_std_by_hand():
    # [1,0,0,1]: population std .5 -> ±1; [1,0,0,0]: std sqrt(.1875)=.4330127 -> .75/.433 = 1.7320508,
    # -.25/.433 = -.5773503
    adv = group_advantages(jnp.asarray(REWARDS).reshape(4, 4), group_size=4, ddof=0)
    assert adv.shape == (4, 4)
    np.testing.assert_allclose(np.asarray(adv[0]), [1, -1, -1, 1], atol=1e-5)
    np.testing.assert_allclose(np.asarray(adv[3]), [1.7320508, -0.5773503, -0.5773503, -0.5773503], atol=1e-5)


def test_group_advantages_without_std_is_dr_grpo():
    expected = [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0.75, -0.25, -0.25, -0.25]
    np.testing.assert_allclose(np.asarray(group_advantages(REWARDS, 4, normalize_std=False)), expected, atol=1e-7)
    np.testing.assert_allclose(np.asarray(get_advantage_estimator("dr_grpo")(REWARDS, 4)), expected, atol=1e-7)
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "dr_grpo"}


def test_zero_variance_group_fraction():
    # groups 2 and 3 are constant -> 2 of 4
    assert float(zero_variance_group_fraction(REWARDS, 4)) == pytest.approx(0.5)
    assert float(zero_variance_group_fraction(REWARDS.reshape(4, 4), 4)) == pytest.approx(0.5)


def test_group_advantages_rejects_bad_shapes():
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        group_advantages(jnp.ones(10), group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(jnp.ones((3, 5)), group_size=4)
    with pytest.raises(KeyError, match="unknown advantage estimator"):
        get_advantage_estimator("ppo_gae")


# ----------------------------------------------------------------------------- KL
def test_kl_estimators_by_hand():
    logp = jnp.array([[-1.0, -2.0, -0.5]])
    ref = jnp.array([[-2.0, -1.0, -0.5]])
    # logp - ref = [1, -1, 0]
    np.testing.assert_allclose(np.asarray(k1_kl(logp, ref)), [[1.0, -1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(k2_kl(logp, ref)), [[0.5, 0.5, 0.0]], atol=1e-6)
    # k3: e^-1 + 1 - 1 = 0.3678794;  e^1 - 1 - 1 = 0.7182818;  0
    np.testing.assert_allclose(np.asarray(k3_kl(logp, ref)), [[0.3678794, 0.7182818, 0.0]], atol=1e-6)
    assert get_kl_estimator("k3") is k3_kl
    assert set(KL_ESTIMATORS) == {"k1", "k2", "k3"}
    with pytest.raises(KeyError, match="unknown KL estimator"):
        get_kl_estimator("k4")


def test_k3_nonnegative_and_zero_when_equal():
    rng = np.random.default_rng(0)
    logp = jnp.asarray(-rng.exponential(2.0, size=(8, 64)), jnp.float32)
    ref = jnp.asarray(-rng.exponential(2.0, size=(8, 64)), jnp.float32)
    assert float(jnp.min(k3_kl(logp, ref))) >= 0.0
    assert float(jnp.max(jnp.abs(k3_kl(logp, logp)))) == 0.0


def test_k3_is_unbiased_for_kl_between_known_distributions():
    # Independent reference: KL(p||q) via scipy, estimated by E_{x~p}[k3] computed exactly.
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.2, 0.6])
    expected = scipy.stats.entropy(p, q)
    k3 = np.asarray(k3_kl(jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q))))
    assert float(np.sum(p * k3)) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- clipped objective
@pytest.mark.parametrize(
    "ratio, adv, expected_loss, expected_clipped",
    [
        (1.1, 2.0, -2.2, False),  # inside: -min(2.2, 2.2)
        (1.1, -2.0, 2.2, False),
        (1.5, 2.0, -2.4, True),  # above, A>0: -min(3.0, 1.2*2=2.4) -> clipped
        (1.5, -2.0, 3.0, False),  # above, A<0: -min(-3.0, -2.4) = 3.0 -> unclipped term active
        (0.5, 2.0, -1.0, False),  # below, A>0: -min(1.0, 0.8*2=1.6) = -1.0
        (0.5, -2.0, 1.6, True),  # below, A<0: -min(-1.0, -1.6) = 1.6 -> clipped
    ],
)
def test_clipped_policy_loss_by_hand(ratio, adv, expected_loss, expected_clipped):
    old = jnp.array([[-1.0]])
    logp = old + math.log(ratio)
    loss, clipped = clipped_policy_loss(logp, old, jnp.array([adv]), eps_low=0.2, eps_high=0.2)
    assert float(loss[0, 0]) == pytest.approx(expected_loss, abs=1e-5)
    assert bool(clipped[0, 0]) is expected_clipped


def test_clipped_policy_loss_asymmetric_clip_higher():
    # eps_high = .28: ratio 1.25 stays (loss -1.25), ratio 1.3 clips at 1.28
    old = jnp.zeros((1, 2))
    logp = jnp.log(jnp.array([[1.25, 1.3]]))
    loss, clipped = clipped_policy_loss(logp, old, jnp.array([1.0]), eps_low=0.2, eps_high=0.28)
    np.testing.assert_allclose(np.asarray(loss), [[-1.25, -1.28]], atol=1e-5)
    assert np.asarray(clipped).tolist() == [[False, True]]


# ----------------------------------------------------------------------------- aggregation
LOSS_TOK = jnp.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 0.0, 0.0], [7.0, 8.0, 9.0, 10.0]])
RAGGED = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])


def test_aggregations_on_ragged_mask_by_hand():
    # token-mean: (1+2+3+5+6)/5 = 3.4
    assert float(get_loss_aggregation("token-mean")(LOSS_TOK, RAGGED)) == pytest.approx(3.4)
    # seq-mean-token-mean: seq means 2 and 5.5, empty third row left out -> 3.75
    assert float(get_loss_aggregation("seq-mean-token-mean")(LOSS_TOK, RAGGED)) == pytest.approx(3.75)
    # seq-mean-token-sum-norm: sums 6 and 11; /4 (default T) -> 1.5, 2.75 -> 2.125; /8 -> 1.0625
    sum_norm = get_loss_aggregation("seq-mean-token-sum-norm")
    assert float(sum_norm(LOSS_TOK, RAGGED)) == pytest.approx(2.125)
    assert float(sum_norm(LOSS_TOK, RAGGED, 8)) == pytest.approx(1.0625)
    assert set(LOSS_AGGREGATIONS) == {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"}


@pytest.mark.parametrize("name", sorted(LOSS_AGGREGATIONS))
def test_aggregation_of_empty_mask_is_zero_not_nan(name):
    value = float(get_loss_aggregation(name)(LOSS_TOK, jnp.zeros_like(RAGGED)))
    assert value == 0.0


def test_aggregation_errors_name_the_problem():
    with pytest.raises(KeyError, match="unknown loss aggregation"):
        get_loss_aggregation("sum")
    with pytest.raises(ValueError, match="mask"):
        get_loss_aggregation("token-mean")(LOSS_TOK, RAGGED[:, :3])


# ----------------------------------------------------------------------------- grpo_loss
def test_grpo_loss_by_hand():
    logp = jnp.array([[-1.0, -2.0], [-0.5, -3.0]])
    # ref - logp = [[0, ln2], [-ln2, 5]]
    ref = logp + jnp.array([[0.0, math.log(2.0)], [-math.log(2.0), 5.0]])
    mask = jnp.array([[1, 1], [1, 0]])
    # ratio 1 everywhere -> policy_tok = -A = [[-1,-1],[1,1]]; counted: -1,-1,1 -> mean -1/3
    # k3: 0; 2 - ln2 - 1 = .306853; .5 + ln2 - 1 = .193147 -> sum .5 over 3 tokens = 1/6
    loss, m = grpo_loss(logp, logp, ref, jnp.array([1.0, -1.0]), mask, kl_coef=0.1)
    assert float(m["policy_loss"]) == pytest.approx(-1 / 3, abs=1e-6)
    assert float(m["kl"]) == pytest.approx(1 / 6, abs=1e-6)
    assert float(loss) == pytest.approx(-1 / 3 + 0.1 / 6, abs=1e-6)
    assert float(m["clip_fraction"]) == 0.0
    assert float(m["response_tokens"]) == 3.0
    assert float(m["ratio_mean"]) == pytest.approx(1.0)


def test_grpo_loss_clip_fraction_and_no_reference():
    old = jnp.zeros((1, 4))
    logp = jnp.log(jnp.array([[1.5, 1.1, 0.5, 2.0]]))  # 1.5 and 2.0 clipped for A > 0; 2.0 masked out
    mask = jnp.array([[1, 1, 1, 0]])
    loss, m = grpo_loss(logp, old, None, jnp.array([1.0]), mask, kl_coef=0.0)
    # tokens: -1.2, -1.1, -0.5 -> mean -0.9333333; clipped 1 of 3
    assert float(loss) == pytest.approx(-2.8 / 3, abs=1e-5)
    assert float(m["clip_fraction"]) == pytest.approx(1 / 3)
    assert float(m["kl"]) == 0.0
    assert float(m["ratio_max"]) == pytest.approx(1.5, abs=1e-5)


def test_grpo_loss_rejects_bad_input():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="ref_logp is None"):
        grpo_loss(x, x, None, jnp.zeros(2), x, kl_coef=0.001)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(x, x, x, jnp.zeros(3), x)
    with pytest.raises(ValueError, match="old_logp"):
        grpo_loss(x, x[:, :2], x, jnp.zeros(2), x)


@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("aggregation", sorted(LOSS_AGGREGATIONS))
def test_grpo_loss_gradient_matches_central_differences(kl_estimator, aggregation):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        B, T = 3, 5
        old = -rng.uniform(0.5, 3.0, size=(B, T))
        # log-ratios well away from the clip kinks at log(.8) = -.223 and log(1.2) = .182
        log_ratio = rng.choice([-0.6, -0.05, 0.03, 0.1, 0.5], size=(B, T)) + rng.uniform(-0.02, 0.02, (B, T))
        logp = old + log_ratio
        ref = -rng.uniform(0.5, 3.0, size=(B, T))
        adv = np.array([1.3, -0.7, 0.4])
        mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float64)

        def f(lp):
            return grpo_loss(lp, jnp.asarray(old), jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(mask),
                             kl_coef=0.3, kl_estimator=kl_estimator, aggregation=aggregation,
                             max_response_len=7)[0]

        grad = np.asarray(jax.grad(f)(jnp.asarray(logp)))
        assert grad.dtype == np.float64
        h = 1e-6
        steps = h * np.eye(B * T).reshape(B * T, B, T)  # one perturbed coordinate per row
        f_many = jax.jit(jax.vmap(f))
        numeric = (np.asarray(f_many(jnp.asarray(logp + steps))) - np.asarray(f_many(jnp.asarray(logp - steps))))
        numeric = (numeric / (2 * h)).reshape(B, T)
        np.testing.assert_allclose(grad, numeric, atol=1e-7, rtol=1e-6)
        assert np.all(grad[mask == 0] == 0)  # masked tokens get no gradient
        assert np.any(grad[mask == 1] != 0)


# ----------------------------------------------------------------------------- log-probs, entropy
def test_token_logprobs_and_entropy_match_scipy():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(2, 3, 11)).astype(np.float32)
    targets = rng.integers(0, 11, size=(2, 3))
    ref_logp = np.take_along_axis(scipy.special.log_softmax(logits, axis=-1), targets[..., None], -1)[..., 0]
    got = token_logprobs(jnp.asarray(logits), jnp.asarray(targets))
    assert got.shape == (2, 3) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), ref_logp, atol=1e-5)
    ref_entropy = scipy.stats.entropy(scipy.special.softmax(logits, axis=-1), axis=-1)
    np.testing.assert_allclose(np.asarray(token_entropy(jnp.asarray(logits))), ref_entropy, atol=1e-5)


def test_token_logprobs_bfloat16_and_masked_vocab():
    logits = jnp.array([[[0.0, 0.0, -jnp.inf, 0.0]]])  # uniform over 3 tokens, one masked out
    assert float(token_entropy(logits)[0, 0]) == pytest.approx(math.log(3.0), abs=1e-6)
    lp = token_logprobs(logits.astype(jnp.bfloat16), jnp.array([[1]]))
    assert lp.dtype == jnp.float32
    assert float(lp[0, 0]) == pytest.approx(-math.log(3.0), abs=1e-6)


def test_token_logprobs_rejects_bad_input():
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(jnp.zeros((2, 3, 5)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        token_logprobs(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3)))
