"""The jitted pieces of a GRPO step: per-token log-probabilities of responses, and one optimiser update over
a mini-batch with micro-batch gradient accumulation. The loss itself is `rl_scaling.grpo.grpo_loss`.

Shapes: M micro-batches of m sequences; tokens [M, m, P + R]; targets / mask / logp [M, m, R].
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rl_scaling.grpo.aggregation import token_mean
from rl_scaling.grpo.chunked_logprobs import DEFAULT_LOGPROB_CHUNK, chunked_logprobs_and_entropy
from rl_scaling.grpo.policy_loss import grpo_loss


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The loss and log-prob settings of the update step (config keys grpo.<name>; see `grpo_loss`)."""

    eps_low: float = 0.2
    eps_high: float = 0.2
    kl_coef: float = 0.001
    kl_estimator: str = "k3"
    aggregation: str = "token-mean"
    max_response_len: int | None = None
    temperature: float = 1.0
    dual_clip: float = 0.0  # c > 1 caps a negative-advantage token's loss at c·|A|; 0 = off
    log_ratio_clamp: float = 0.0  # L > 0 clamps logp - old_logp to [-L, L] before exp; 0 = off
    logprob_chunk: int = DEFAULT_LOGPROB_CHUNK

    @classmethod
    def from_config(cls, grpo) -> "LossConfig":
        """From a config's `grpo` block; keys it lacks keep their defaults."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: grpo[name] for name in names if name in grpo})


def response_logprobs(model, tokens, start, targets, temperature: float, remat: bool = False,
                      chunk: int = DEFAULT_LOGPROB_CHUNK):
    """tokens [n, P + R], start [n], targets [n, R] -> (logp [n, R], entropy [n, R]) under
    softmax(logits / temperature). Logits are computed for the R response positions only, `chunk` positions
    at a time (`chunked_logprobs_and_entropy`; 0 = all at once)."""
    R = targets.shape[1]
    P = tokens.shape[1] - R
    hidden, _ = model.forward(tokens[:, :-1], start=start, return_hidden=True, remat=remat)
    head, tied = model.head()
    return chunked_logprobs_and_entropy(hidden[:, P - 1:], head, tied, targets, temperature, chunk)


def make_logprob_fn(graphdef, temperature: float, chunk: int = DEFAULT_LOGPROB_CHUNK):
    """jit(params, tokens, start, targets) -> logp [n, R] (no gradient): old-policy and reference passes."""

    @jax.jit
    def logprob_fn(params, tokens, start, targets):
        model = nnx.merge(graphdef, params)
        logp, _ = response_logprobs(model, tokens, start, targets, temperature, chunk=chunk)
        return logp

    return logprob_fn


def micro_batch_weights(mask: jax.Array, aggregation: str) -> jax.Array:
    """mask [M, m, R] -> [M] weights summing to 1 such that sum_j w_j * aggregate(micro-batch j) equals
    the aggregate over the whole mini-batch (token counts for token-mean, counted sequences otherwise)."""
    if aggregation == "token-mean":
        counts = mask.sum(axis=(1, 2))
    else:
        counts = (mask.sum(axis=2) > 0).sum(axis=1).astype(jnp.float32)
    return counts / jnp.maximum(counts.sum(), 1.0)


def make_update_fn(graphdef, optimizer: optax.GradientTransformation, loss_cfg: LossConfig, remat: bool = False):
    """jit(params, opt_state, batch) -> (params, opt_state, metrics). `batch` holds tokens, start, targets,
    mask, advantages [M, m], old_logp and (if kl_coef > 0) ref_logp, each with a leading micro-batch axis.

    `params` and `opt_state` are donated: the new ones take their buffers, so the old ones are deleted by the
    call and must not be used after it (keep a copy, e.g. the KL reference, with `jnp.copy`)."""

    def micro_loss(params, micro):
        model = nnx.merge(graphdef, params)
        logp, entropy = response_logprobs(model, micro["tokens"], micro["start"], micro["targets"],
                                          loss_cfg.temperature, remat, loss_cfg.logprob_chunk)
        loss, metrics = grpo_loss(
            logp, micro["old_logp"], micro.get("ref_logp"), micro["advantages"], micro["mask"],
            eps_low=loss_cfg.eps_low, eps_high=loss_cfg.eps_high, kl_coef=loss_cfg.kl_coef,
            kl_estimator=loss_cfg.kl_estimator, aggregation=loss_cfg.aggregation,
            max_response_len=loss_cfg.max_response_len, dual_clip=loss_cfg.dual_clip,
            log_ratio_clamp=loss_cfg.log_ratio_clamp)
        metrics = dict(metrics, entropy=token_mean(entropy, micro["mask"]))
        return loss, metrics

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update_fn(params, opt_state, batch):
        weights = micro_batch_weights(batch["mask"], loss_cfg.aggregation)
        zero_grads = jax.tree.map(jnp.zeros_like, params)

        def accumulate(grads, inputs):
            micro, w = inputs
            (_, metrics), g = jax.value_and_grad(micro_loss, has_aux=True)(params, micro)
            grads = jax.tree.map(lambda a, b: a + w * b, grads, g)
            ratio_max = metrics.pop("ratio_max")
            return grads, (jax.tree.map(lambda m: w * m, metrics), ratio_max)

        grads, (metrics, ratio_max) = jax.lax.scan(accumulate, zero_grads, (batch, weights))
        metrics = jax.tree.map(lambda m: m.sum(), metrics)
        metrics["ratio_max"] = ratio_max.max()
        metrics["grad_norm"] = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, metrics

    return update_fn


def make_optimizer(lr: float, weight_decay: float, grad_clip: float, *, schedule: str = "constant",
                   warmup_steps: int = 0, total_updates: int | None = None, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Gradient clipping by global norm, then AdamW on a learning-rate schedule (per optimiser update)."""
    if schedule == "constant":
        lr_fn = optax.constant_schedule(lr)
    elif schedule == "cosine":
        if not total_updates:
            raise ValueError("schedule 'cosine' needs total_updates")
        lr_fn = optax.cosine_decay_schedule(lr, max(total_updates - warmup_steps, 1))
    elif schedule == "linear":
        if not total_updates:
            raise ValueError("schedule 'linear' needs total_updates")
        lr_fn = optax.linear_schedule(lr, 0.0, max(total_updates - warmup_steps, 1))
    else:
        raise KeyError(f"unknown learning-rate schedule {schedule!r}; known: constant, cosine, linear")
    if warmup_steps:
        lr_fn = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), lr_fn], [warmup_steps])
    return optax.chain(optax.clip_by_global_norm(grad_clip),
                       optax.adamw(lr_fn, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
