"""GRPO as small pure JAX functions: advantages, KL estimators, clipped policy loss, aggregation.

Each family is a registry selected by name from a config; the trainer composes them via ``grpo_loss``.
"""

from rl_scaling.grpo.advantages import (
    ADVANTAGE_ESTIMATORS,
    dr_grpo_advantages,
    get_advantage_estimator,
    group_advantages,
    zero_variance_group_fraction,
)
from rl_scaling.grpo.aggregation import (
    LOSS_AGGREGATIONS,
    get_loss_aggregation,
    seq_mean_token_mean,
    seq_mean_token_sum_norm,
    token_mean,
)
from rl_scaling.grpo.kl import KL_ESTIMATORS, get_kl_estimator, k1_kl, k2_kl, k3_kl
from rl_scaling.grpo.logprobs import token_entropy, token_logprobs
from rl_scaling.grpo.policy_loss import clipped_policy_loss, grpo_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "clipped_policy_loss",
    "dr_grpo_advantages",
    "get_advantage_estimator",
    "get_kl_estimator",
    "get_loss_aggregation",
    "group_advantages",
    "grpo_loss",
    "k1_kl",
    "k2_kl",
    "k3_kl",
    "seq_mean_token_mean",
    "seq_mean_token_sum_norm",
    "token_entropy",
    "token_logprobs",
    "token_mean",
    "zero_variance_group_fraction",
]
