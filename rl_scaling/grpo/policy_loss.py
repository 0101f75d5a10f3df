"""The PPO-clipped GRPO objective per token, and ``grpo_loss`` composing it with KL and aggregation.

Masking is the caller's job: ``mask`` [B, T] marks the response tokens that count. To drop truncated
completions (no EOS within the response budget), zero their rows of ``mask``; to drop whole prompt
groups, zero the rows of all their samples.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from rl_scaling.grpo.aggregation import get_loss_aggregation, token_mean
from rl_scaling.grpo.kl import get_kl_estimator

Array = jnp.ndarray


def clipped_policy_loss(
    logp: Array, old_logp: Array, advantages: Array, eps_low: float, eps_high: float
) -> tuple[Array, Array]:
    """PPO clipped surrogate, per token, to be minimised.

    ratio = exp(logp - old_logp);
    loss_tok = -min(ratio·A, clip(ratio, 1 - eps_low, 1 + eps_high)·A).

    Args:
      logp, old_logp: ``[B, T]`` log-probs of the sampled tokens under the policy being trained and
        the policy that sampled them.
      advantages: ``[B]`` (one per sequence, broadcast over T) or ``[B, T]``.
      eps_low, eps_high: clip range below / above 1 (DAPO's "clip-higher" uses eps_high > eps_low).

    Returns:
      ``(loss_tok [B, T], clipped [B, T] bool)``; ``clipped`` is True where the clipped term is the
      smaller one strictly, i.e. where the token gets no gradient. Its masked mean is the clip fraction.
    """
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    ratio = jnp.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return jnp.maximum(unclipped, clipped), clipped > unclipped


def _check_shapes(logp, old_logp, ref_logp, advantages, mask) -> None:
    if logp.ndim != 2:
        raise ValueError(f"logp must be [B, T], got shape {logp.shape}")
    named = {"old_logp": old_logp, "mask": mask}
    if ref_logp is not None:
        named["ref_logp"] = ref_logp
    for name, value in named.items():
        if value.shape != logp.shape:
            raise ValueError(f"{name} has shape {value.shape}, expected logp's shape {logp.shape}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [B] = {logp.shape[:1]}, got shape {advantages.shape}")


def grpo_loss(
    logp: Array,
    old_logp: Array,
    ref_logp: Optional[Array],
    advantages: Array,
    mask: Array,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    kl_coef: float = 0.001,
    kl_estimator: str = "k3",
    aggregation: str = "token-mean",
    max_response_len: Optional[int] = None,
) -> tuple[Array, dict[str, Array]]:
    """GRPO loss: aggregate(clipped policy loss + kl_coef · KL) over the masked response tokens.

    Args:
      logp: ``[B, T]`` log-probs of the sampled tokens under the policy being trained (the only
        input gradients flow through; the others are wrapped in ``stop_gradient``).
      old_logp: ``[B, T]`` log-probs under the policy that sampled them.
      ref_logp: ``[B, T]`` log-probs under the frozen reference, or None when ``kl_coef == 0``.
      advantages: ``[B]`` one per sequence (see ``group_advantages``).
      mask: ``[B, T]`` 1 on response tokens that count, 0 elsewhere (drop truncated completions here).
      eps_low, eps_high: PPO clip range.
      kl_coef: weight of the KL term (0.001 in the RL scaling study).
      kl_estimator: name in ``KL_ESTIMATORS`` ("k1", "k2", "k3").
      aggregation: name in ``LOSS_AGGREGATIONS``.
      max_response_len: constant normaliser (tokens) for "seq-mean-token-sum-norm"; default T.

    Returns:
      ``(loss, metrics)``: the scalar to minimise and scalars ``loss``, ``policy_loss``, ``kl``
      (both aggregated like the loss), ``clip_fraction`` (fraction of counted tokens clipped),
      ``ratio_mean`` and ``ratio_max`` (over counted tokens), ``response_tokens`` (counted).
    """
    if ref_logp is None and not (isinstance(kl_coef, (int, float)) and kl_coef == 0):
        raise ValueError(f"ref_logp is None but kl_coef={kl_coef!r}; pass ref_logp or kl_coef=0")
    _check_shapes(logp, old_logp, ref_logp, advantages, mask)
    aggregate = get_loss_aggregation(aggregation)
    old_logp = jax.lax.stop_gradient(old_logp)
    advantages = jax.lax.stop_gradient(advantages)
    mask = mask.astype(logp.dtype)

    policy_tok, clipped = clipped_policy_loss(logp, old_logp, advantages, eps_low, eps_high)
    policy_loss = aggregate(policy_tok, mask, max_response_len)
    if ref_logp is None:
        kl = jnp.zeros((), logp.dtype)
        loss = policy_loss
    else:
        kl_tok = get_kl_estimator(kl_estimator)(logp, jax.lax.stop_gradient(ref_logp))
        kl = aggregate(kl_tok, mask, max_response_len)
        # Aggregation is linear, so aggregate(policy + c·kl) == policy_loss + c·kl.
        loss = policy_loss + kl_coef * kl

    ratio = jax.lax.stop_gradient(jnp.exp(logp - old_logp))
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "kl": kl,
        "clip_fraction": token_mean(clipped.astype(logp.dtype), mask),
        "ratio_mean": token_mean(ratio, mask),
        "ratio_max": jnp.max(jnp.where(mask > 0, ratio, -jnp.inf), initial=0.0),
        "response_tokens": jnp.sum(mask),
    }
    return loss, metrics
