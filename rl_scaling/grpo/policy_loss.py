"""The PPO-clipped GRPO objective per token, and ``grpo_loss`` composing it with KL and aggregation.

Masking is the caller's job: ``mask`` [B, T] marks the response tokens that count. To drop truncated
completions (no EOS within the response budget), zero their rows of ``mask``; to drop whole prompt
groups, zero the rows of all their samples.

Masking is by selection, not multiplication: the log-probs of uncounted slots are replaced by 0 before
any ``exp`` or KL, so whatever padding holds (NaN, a reference log-prob of 200) never reaches the loss
or its gradient (``0 · exp(200)`` would be ``0 · inf = NaN``).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from rl_scaling.grpo.aggregation import get_loss_aggregation, token_mean
from rl_scaling.grpo.kl import get_kl_estimator

Array = jnp.ndarray


def policy_ratio(logp: Array, old_logp: Array, log_ratio_clamp: float = 0.0) -> Array:
    """exp(logp - old_logp), ``[B, T]``; with ``log_ratio_clamp`` L > 0 the log-ratio is clamped to
    [-L, L] first, so one token whose log-prob moved by hundreds of nats cannot overflow the ratio."""
    log_ratio = logp - old_logp
    if log_ratio_clamp > 0:
        log_ratio = jnp.clip(log_ratio, -log_ratio_clamp, log_ratio_clamp)
    return jnp.exp(log_ratio)


def clipped_policy_loss(
    logp: Array, old_logp: Array, advantages: Array, eps_low: float, eps_high: float, *,
    dual_clip: float = 0.0, log_ratio_clamp: float = 0.0,
) -> tuple[Array, Array]:
    """PPO clipped surrogate, per token, to be minimised.

    ratio = exp(logp - old_logp);
    loss_tok = -min(ratio·A, clip(ratio, 1 - eps_low, 1 + eps_high)·A);
    with dual clip c > 1 (Ye et al. 2020, "Mastering complex control in MOBA games with deep RL"), for
    A < 0: loss_tok = min(loss_tok, -c·A), i.e. a token whose ratio has grown far past 1 while its
    advantage is negative is capped at c·|A| (and gets no gradient) instead of growing with the ratio.

    Args:
      logp, old_logp: ``[B, T]`` log-probs of the sampled tokens under the policy being trained and
        the policy that sampled them.
      advantages: ``[B]`` (one per sequence, broadcast over T) or ``[B, T]``.
      eps_low, eps_high: clip range below / above 1 (DAPO's "clip-higher" uses eps_high > eps_low).
      dual_clip: c of the dual clip, > 1; 0 = off.
      log_ratio_clamp: L > 0 clamps logp - old_logp to [-L, L] before the exp; 0 = off.

    Returns:
      ``(loss_tok [B, T], clipped [B, T] bool)``; ``clipped`` is True where a clip is the binding term
      strictly, i.e. where the token gets no gradient. Its masked mean is the clip fraction.
    """
    if dual_clip and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or 0 = off), got {dual_clip}")
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    ratio = policy_ratio(logp, old_logp, log_ratio_clamp)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss_tok, was_clipped = jnp.maximum(unclipped, clipped), clipped > unclipped
    if dual_clip:
        cap = -dual_clip * advantages
        capped = (advantages < 0) & (loss_tok > cap)
        loss_tok, was_clipped = jnp.where(capped, cap, loss_tok), was_clipped | capped
    return loss_tok, was_clipped


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
    dual_clip: float = 0.0,
    log_ratio_clamp: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """GRPO loss: aggregate(clipped policy loss + kl_coef · KL) over the masked response tokens.

    Args:
      logp: ``[B, T]`` log-probs of the sampled tokens under the policy being trained (the only
        input gradients flow through; the others are wrapped in ``stop_gradient``).
      old_logp: ``[B, T]`` log-probs under the policy that sampled them.
      ref_logp: ``[B, T]`` log-probs under the frozen reference, or None when ``kl_coef == 0``.
      advantages: ``[B]`` one per sequence (see ``group_advantages``).
      mask: ``[B, T]`` 1 on response tokens that count, 0 elsewhere (drop truncated completions here).
        Uncounted slots are selected away before any arithmetic: their values never matter.
      eps_low, eps_high: PPO clip range.
      kl_coef: weight of the KL term (0.001 in the RL scaling study).
      kl_estimator: name in ``KL_ESTIMATORS`` ("k1", "k2", "k3").
      aggregation: name in ``LOSS_AGGREGATIONS``.
      max_response_len: constant normaliser (tokens) for "seq-mean-token-sum-norm"; default T.
      dual_clip: c > 1 caps a negative-advantage token's loss at c·|A| (Ye et al. 2020; 3 is usual);
        0 = off (the study's recipe).
      log_ratio_clamp: L > 0 clamps logp - old_logp to [-L, L] before the ratio's exp (e.g. 20);
        0 = off (the study's recipe).

    Returns:
      ``(loss, metrics)``: the scalar to minimise and scalars ``loss``, ``policy_loss``, ``kl``
      (both aggregated like the loss), ``clip_fraction`` (fraction of counted tokens clipped),
      ``ratio_mean`` and ``ratio_max`` (over counted tokens), ``response_tokens`` (counted).
    """
    if ref_logp is None and not (isinstance(kl_coef, (int, float)) and kl_coef == 0):
        raise ValueError(f"ref_logp is None but kl_coef={kl_coef!r}; pass ref_logp or kl_coef=0")
    _check_shapes(logp, old_logp, ref_logp, advantages, mask)
    aggregate = get_loss_aggregation(aggregation)
    counted = mask > 0

    def counted_only(x):
        return jnp.where(counted, x, jnp.zeros((), x.dtype))

    logp = counted_only(logp)
    old_logp = jax.lax.stop_gradient(counted_only(old_logp))
    advantages = jax.lax.stop_gradient(advantages)
    mask = mask.astype(logp.dtype)

    policy_tok, clipped = clipped_policy_loss(logp, old_logp, advantages, eps_low, eps_high,
                                              dual_clip=dual_clip, log_ratio_clamp=log_ratio_clamp)
    policy_loss = aggregate(policy_tok, mask, max_response_len)
    if ref_logp is None:
        kl = jnp.zeros((), logp.dtype)
        loss = policy_loss
    else:
        kl_tok = get_kl_estimator(kl_estimator)(logp, jax.lax.stop_gradient(counted_only(ref_logp)))
        kl = aggregate(kl_tok, mask, max_response_len)
        # Aggregation is linear, so aggregate(policy + c·kl) == policy_loss + c·kl.
        loss = policy_loss + kl_coef * kl

    ratio = jax.lax.stop_gradient(policy_ratio(logp, old_logp, log_ratio_clamp))
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "kl": kl,
        "clip_fraction": token_mean(clipped.astype(logp.dtype), mask),
        "ratio_mean": token_mean(ratio, mask),
        "ratio_max": jnp.max(jnp.where(counted, ratio, -jnp.inf), initial=0.0),
        "response_tokens": jnp.sum(mask),
    }
    return loss, metrics
