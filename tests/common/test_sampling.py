"""Temperature / top-k / top-p sampling against the expected truncated softmax (chi-square, fixed seed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from common.sampling import SamplingMode, check_logprobs_not_nan, first_argmax, sample_tokens

LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0], np.float32)


def expected_distribution(temperature, top_k, top_p):
    """Computed independently with numpy: softmax(logits/T), keep top-k, then the smallest prefix of the
    sorted probabilities reaching top_p, renormalise."""
    p = np.exp(LOGITS / temperature)
    p /= p.sum()
    order = np.argsort(-p)
    keep = np.zeros_like(p, bool)
    k = top_k or len(p)
    mass = 0.0
    for rank, i in enumerate(order[:k]):
        if mass >= top_p:
            break
        keep[i] = True
        mass += p[i] / p[order[:k]].sum()
    q = np.where(keep, p, 0.0)
    return q / q.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.5, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.8), (0.8, 5, 0.7),
])
def test_empirical_distribution_matches_truncated_softmax(temperature, top_k, top_p):
    n = 40_000
    logits = jnp.broadcast_to(jnp.asarray(LOGITS), (n, len(LOGITS)))
    keys = jax.random.split(jax.random.key(1234), n)
    mode = SamplingMode.from_params(temperature, top_k, top_p)
    tokens, logp = sample_tokens(logits, keys, jnp.float32(temperature), jnp.float32(top_p), mode)
    counts = np.bincount(np.asarray(tokens), minlength=len(LOGITS))
    expected = expected_distribution(temperature, top_k, top_p)
    assert counts[expected == 0].sum() == 0, "sampled a token outside the top-k / top-p set"
    support = expected > 0
    f_exp = expected[support].astype(np.float64)
    _, p_value = stats.chisquare(counts[support], f_exp / f_exp.sum() * counts.sum())
    assert p_value > 1e-3
    # log-probabilities are those of the untruncated softmax(logits / T)
    full = LOGITS / temperature - np.log(np.exp(LOGITS / temperature).sum())
    np.testing.assert_allclose(np.asarray(logp), full[np.asarray(tokens)], rtol=1e-5, atol=1e-5)


def test_large_vocabulary_samples_follow_the_softmax():
    """The inverse-CDF draw (common.sampling.categorical) over a vocabulary of SmolLM2's size, where the cumulative
    sum runs over 49152 probabilities in float32: the 30 most likely tokens one by one, the next 970 and the long
    tail (~49000 tokens of small probability) as two bins, against the float64 softmax (chi-square)."""
    V, n, chunk = 49152, 20_000, 1000
    rng = np.random.default_rng(7)
    row = (rng.standard_normal(V) * 2.0).astype(np.float32)
    row[rng.choice(V, 30, replace=False)] += 9.0  # a head of likely tokens scattered over the vocabulary
    mode = SamplingMode.from_params(1.0, 0, 1.0)
    draw = jax.jit(lambda keys: sample_tokens(jnp.broadcast_to(jnp.asarray(row), (chunk, V)), keys, jnp.float32(1.0),
                                              jnp.float32(1.0), mode)[0])
    keys = jax.random.split(jax.random.key(99), n).reshape(n // chunk, chunk)
    tokens = np.concatenate([np.asarray(draw(k)) for k in keys])
    p = np.exp(row.astype(np.float64) - row.max())
    p /= p.sum()
    order = np.argsort(-p)
    bins = np.zeros(V, int)  # token -> bin: its rank for the top 30, then 30 (ranks 30-999) and 31 (the tail)
    bins[order] = np.minimum(np.arange(V), 30)
    bins[order[1000:]] = 31
    counts = np.bincount(bins[tokens], minlength=32)
    expected = np.bincount(bins, weights=p, minlength=32) * n
    assert expected[31] > 100  # the tail carries real mass, so a lost or inflated tail shows
    _, p_value = stats.chisquare(counts, expected)
    assert p_value > 1e-3


def test_greedy_takes_argmax_with_untempered_logprob():
    logits = jnp.asarray(np.stack([LOGITS, LOGITS[::-1]]))
    tokens, logp = sample_tokens(logits, jax.random.split(jax.random.key(0), 2), jnp.float32(1.0),
                                 jnp.float32(1.0), SamplingMode.from_params(0.0, 0, 1.0))
    assert tokens.tolist() == [0, 7]
    expected = LOGITS[0] - np.log(np.exp(LOGITS).sum())
    np.testing.assert_allclose(np.asarray(logp), [expected, expected], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(temperature=-1.0, top_k=0, top_p=1.0),
                                    dict(temperature=1.0, top_k=-2, top_p=1.0),
                                    dict(temperature=1.0, top_k=0, top_p=0.0),
                                    dict(temperature=1.0, top_k=0, top_p=1.5),
                                    dict(temperature=float("nan"), top_k=0, top_p=1.0),
                                    dict(temperature=float("inf"), top_k=0, top_p=1.0)])
def test_bad_sampling_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SamplingMode.from_params(**kwargs)


def test_first_argmax_equals_numpy_argmax_with_ties():
    rs = np.random.RandomState(0)
    logits = rs.randint(0, 5, (64, 37)).astype(np.float32)  # many ties: the first maximum must win
    logits[3] = 2.0  # all equal
    np.testing.assert_array_equal(np.asarray(first_argmax(jnp.asarray(logits))), logits.argmax(-1))
    big = rs.standard_normal((4, 49152)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(first_argmax(jnp.asarray(big))), big.argmax(-1))


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (3, 1.0), (0, 0.9), (5, 0.8)])
@pytest.mark.parametrize("temperature", [1e-37, 1e-30, 1e-3, 1.0, 50.0])
def test_logprobs_are_finite_at_any_temperature(temperature, top_k, top_p):
    """Finite logits give a finite log-probability at every valid setting; at a tiny temperature, logits / T
    once overflowed to inf: the log-probability was NaN (inf - inf) and the draw took the last candidate."""
    rs = np.random.RandomState(0)
    logits = (rs.standard_normal((64, 97)) * 40.0).astype(np.float32)
    logits[0] = 0.0  # a flat row
    logits[1, :50] = -3e38  # the most negative logits float32 holds
    keys = jax.random.split(jax.random.key(5), 64)
    mode = SamplingMode.from_params(temperature, top_k, top_p)
    tokens, logp = sample_tokens(jnp.asarray(logits), keys, jnp.float32(temperature), jnp.float32(top_p), mode)
    logp = np.asarray(logp)
    assert np.isfinite(logp).all() and (logp <= 0).all()
    if temperature <= 1e-30:  # the draw is the argmax, with probability ~1 (each row's maximum is unique)
        rows = np.arange(2, 64)
        np.testing.assert_array_equal(np.asarray(tokens)[rows], logits[rows].argmax(-1))
        np.testing.assert_array_equal(logp[rows], 0.0)


def test_nan_logprobs_are_refused_naming_the_sequences():
    check_logprobs_not_nan([[-0.5, -1.0], [], [-np.inf]])
    with pytest.raises(FloatingPointError, match=r"sequence\(s\) \[1, 3\] of 4 got NaN log-probabilities"):
        check_logprobs_not_nan([[-0.5], [-1.0, float("nan")], [0.0], [np.nan]])
