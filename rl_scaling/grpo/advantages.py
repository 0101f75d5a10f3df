"""Group-relative advantage estimators for GRPO.

Rewards arrive flat, ``[num_prompts * G]`` with the G samples of one prompt adjacent (the order a
sampler produces when each prompt is repeated G times), or already grouped as ``[num_prompts, G]``.
The output has the input's shape.

Which standard deviation: GRPO (Shao et al., 2024) divides by "std" without saying which. We use the
*unbiased sample* standard deviation (``ddof=1``, divide by G - 1), as ``torch.std`` does in verl and
TRL, the code bases the RL scaling study builds on. Pass ``ddof=0`` for the population std. Dr. GRPO
(Liu et al., 2025) drops the division altogether: ``normalize_std=False``.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

Array = jnp.ndarray


def _as_groups(rewards: Array, group_size: int) -> Array:
    """Reshapes ``[P*G]`` or ``[P, G]`` rewards to ``[P, G]``; raises if the shape does not fit."""
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    rewards = jnp.asarray(rewards)
    if rewards.ndim == 2:
        if rewards.shape[1] != group_size:
            raise ValueError(
                f"rewards has shape {rewards.shape}; a 2-D input must be [num_prompts, G] with "
                f"G = group_size = {group_size}"
            )
        return rewards
    if rewards.ndim == 1:
        if rewards.shape[0] % group_size != 0:
            raise ValueError(
                f"rewards has {rewards.shape[0]} entries, not a multiple of group_size={group_size}"
            )
        return rewards.reshape(-1, group_size)
    raise ValueError(f"rewards must be [num_prompts*G] or [num_prompts, G], got shape {rewards.shape}")


def group_advantages(
    rewards: Array,
    group_size: int,
    normalize_std: bool = True,
    eps: float = 1e-6,
    ddof: int = 1,
) -> Array:
    """GRPO advantages ``(r - mean_group) / (std_group + eps)``, one per sampled sequence.

    Args:
      rewards: ``[num_prompts * G]`` (samples of a prompt adjacent) or ``[num_prompts, G]``.
      group_size: G, samples per prompt.
      normalize_std: divide by the group std (GRPO); ``False`` keeps ``r - mean`` (Dr. GRPO).
      eps: added to the std, so a group whose rewards are all equal gets advantage 0, not NaN.
      ddof: 1 = unbiased sample std (default, as verl/TRL), 0 = population std. With G = 1 the
        std is taken as 0 (every advantage is then 0 anyway).

    Returns:
      Float array of the same shape as ``rewards``.
    """
    grouped = _as_groups(rewards, group_size).astype(jnp.result_type(float))
    centred = grouped - grouped.mean(axis=1, keepdims=True)
    if normalize_std:
        dof = max(group_size - ddof, 1)
        std = jnp.sqrt(jnp.sum(centred**2, axis=1, keepdims=True) / dof)
        centred = centred / (std + eps)
    return centred.reshape(jnp.shape(rewards))


def dr_grpo_advantages(rewards: Array, group_size: int) -> Array:
    """Dr. GRPO advantages ``r - mean_group`` (no std division); shape as ``rewards``."""
    return group_advantages(rewards, group_size, normalize_std=False)


def zero_variance_group_fraction(rewards: Array, group_size: int) -> Array:
    """Fraction (scalar in [0, 1]) of prompt groups whose G rewards are all equal.

    Those groups carry zero advantage and hence no policy gradient (e.g. all-correct or all-wrong).
    ``rewards``: ``[num_prompts * G]`` or ``[num_prompts, G]``.
    """
    grouped = _as_groups(rewards, group_size)
    constant = jnp.max(grouped, axis=1) == jnp.min(grouped, axis=1)
    return jnp.mean(constant.astype(jnp.float32))


AdvantageFn = Callable[[Array, int], Array]

ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": group_advantages,
    "dr_grpo": dr_grpo_advantages,
}


def get_advantage_estimator(name: str) -> AdvantageFn:
    """Returns the estimator ``fn(rewards, group_size) -> advantages`` registered under ``name``."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise KeyError(
            f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}"
        ) from None
