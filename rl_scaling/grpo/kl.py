"""Per-token estimators of KL(policy || reference) from sampled-token log-probs.

All take ``logp`` and ``ref_logp`` of shape ``[B, T]`` (natural-log probabilities of the sampled
tokens under the current policy and the frozen reference) and return ``[B, T]`` in nats. The tokens
were sampled from the (old) policy, so each is an estimate of KL(pi || pi_ref); see J. Schulman,
"Approximating KL divergence" (2020).

- k1 = logp - ref_logp                                   unbiased, high variance, can be negative
- k2 = 0.5 (logp - ref_logp)^2                           biased, low variance, >= 0
- k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1      unbiased, low variance, >= 0
  (the "low-variance" estimator of GRPO and the RL scaling study)

No clamping is applied (verl clamps k3 to [-10, 10]); with fp32 log-probs exp overflows only when
the reference is ~88 nats more likely than the policy on a token. The estimators see every slot they are
given: ``grpo_loss`` replaces uncounted (padding) slots by 0 before calling them, so padding never
overflows.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

Array = jnp.ndarray


def k1_kl(logp: Array, ref_logp: Array) -> Array:
    """k1 = logp - ref_logp, ``[B, T]`` nats."""
    return logp - ref_logp


def k2_kl(logp: Array, ref_logp: Array) -> Array:
    """k2 = 0.5 * (logp - ref_logp)^2, ``[B, T]`` nats."""
    return 0.5 * jnp.square(logp - ref_logp)


def k3_kl(logp: Array, ref_logp: Array) -> Array:
    """k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1, ``[B, T]`` nats; >= 0, 0 iff equal."""
    log_ratio = ref_logp - logp
    return jnp.expm1(log_ratio) - log_ratio


KLFn = Callable[[Array, Array], Array]

KL_ESTIMATORS: dict[str, KLFn] = {"k1": k1_kl, "k2": k2_kl, "k3": k3_kl}


def get_kl_estimator(name: str) -> KLFn:
    """Returns the estimator ``fn(logp, ref_logp) -> [B, T]`` registered under ``name``."""
    try:
        return KL_ESTIMATORS[name]
    except KeyError:
        raise KeyError(f"unknown KL estimator {name!r}; known: {sorted(KL_ESTIMATORS)}") from None
