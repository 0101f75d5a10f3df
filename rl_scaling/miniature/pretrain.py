"""Supervised next-token pretraining of one miniature model on the worked-answer corpus.

Brief on purpose: every size gets the same number of steps, batch and learning-rate schedule, so the
larger models reach a lower loss and start GRPO with a higher (but imperfect) pass@1.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from common.config import ModelConfig
from common.model import Decoder
from rl_scaling.grpo.train_step import make_optimizer
from rl_scaling.miniature.corpus import Document


@dataclasses.dataclass(frozen=True)
class EncodedCorpus:
    """tokens int32 [n, T]: prompt ids, answer ids, eos, then pad; answer_start int32 [n]: index of the
    first answer token; lengths int32 [n]: tokens before the padding."""

    tokens: np.ndarray
    answer_start: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return self.tokens.shape[0]


def encode_documents(docs: Sequence[Document], tokenizer) -> EncodedCorpus:
    """Prompt and answer are tokenised separately, as GRPO sees them (prompt ids, then sampled ids)."""
    if not docs:
        raise ValueError("no documents to encode")
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad is None or eos is None:
        raise ValueError(f"the tokenizer needs a pad and an eos token (pad={pad}, eos={eos})")
    rows, starts = [], []
    for d in docs:
        prompt = tokenizer(d.prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(d.answer, add_special_tokens=False)["input_ids"]
        rows.append(prompt + answer + [eos])
        starts.append(len(prompt))
    width = max(map(len, rows))
    tokens = np.full((len(rows), width), pad, np.int32)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
    return EncodedCorpus(tokens, np.asarray(starts, np.int32), np.asarray([len(r) for r in rows], np.int32))


def target_mask(corpus: EncodedCorpus, loss_on: str = "all") -> np.ndarray:
    """float32 [n, T - 1]: 1 where the target tokens[:, t + 1] is trained on.

    "all": every real token after the first (prompt, answer and eos); "answer": answer and eos only.
    """
    n, width = corpus.tokens.shape
    target_pos = np.arange(1, width)[None, :]
    mask = target_pos < corpus.lengths[:, None]
    if loss_on == "answer":
        mask &= target_pos >= corpus.answer_start[:, None]
    elif loss_on != "all":
        raise ValueError(f"loss_on must be 'all' or 'answer', got {loss_on!r}")
    return mask.astype(np.float32)


def next_token_loss(model: Decoder, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean cross-entropy (nats per target token) of tokens[:, 1:] given tokens[:, :-1].

    tokens int32 [B, T]; mask float32 [B, T - 1] (1 = counted). Returns a float32 scalar.
    """
    logits, _ = model.forward(tokens[:, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def make_pretrain_step(graphdef, optimizer: optax.GradientTransformation):
    """jit(params, opt_state, tokens [B, T], mask [B, T - 1]) -> (params, opt_state, loss)."""

    @jax.jit
    def step(params, opt_state, tokens, mask):
        def loss_fn(p):
            return next_token_loss(nnx.merge(graphdef, p), tokens, mask)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def width_scaled_lr(lr: float, width: int, reference_width: int = 0) -> float:
    """Adam's learning rate for hidden size `width`: lr * reference_width / width (the usual 1/width rule,
    so that wider models take smaller steps); `reference_width` 0 keeps `lr` for every width."""
    if reference_width < 0 or width < 1:
        raise ValueError(f"need width >= 1 and reference_width >= 0, got {width}, {reference_width}")
    return lr * reference_width / width if reference_width else lr


@dataclasses.dataclass(frozen=True)
class PretrainResult:
    model: Decoder
    losses: np.ndarray  # float32 [steps], nats per target token
    seconds: float

    def final_loss(self, last: int = 20) -> float:
        """Mean training loss of the last `last` steps (nats per target token)."""
        return float(self.losses[-last:].mean())


def pretrain(config: ModelConfig, corpus: EncodedCorpus, *, steps: int, batch_size: int, lr: float,
             warmup_steps: int = 0, weight_decay: float = 0.0, loss_on: str = "all", seed: int = 0,
             progress=None) -> PretrainResult:
    """A fresh decoder (init seed `seed`) trained for `steps` AdamW steps on batches of `batch_size`
    documents drawn in shuffled epochs; cosine decay of `lr` after `warmup_steps`, clip 1.0."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    if batch_size > len(corpus):
        raise ValueError(f"batch_size {batch_size} exceeds the corpus ({len(corpus)} documents)")
    if int(corpus.tokens.max()) >= config.vocab_size:
        raise ValueError(f"corpus holds token id {int(corpus.tokens.max())} but the model's vocabulary "
                         f"is {config.vocab_size}")
    model = Decoder(config, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    optimizer = make_optimizer(lr, weight_decay, 1.0, schedule="cosine", warmup_steps=warmup_steps,
                               total_updates=steps)
    opt_state = optimizer.init(params)
    step_fn = make_pretrain_step(graphdef, optimizer)
    mask = target_mask(corpus, loss_on)
    rng = np.random.default_rng(seed)
    order, cursor, losses = rng.permutation(len(corpus)), 0, []
    t0 = time.perf_counter()
    for _ in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(corpus)), 0
        idx = order[cursor:cursor + batch_size]
        cursor += batch_size
        params, opt_state, loss = step_fn(params, opt_state, jnp.asarray(corpus.tokens[idx]),
                                          jnp.asarray(mask[idx]))
        losses.append(loss)
        if progress is not None:
            progress.update(1)
    losses = np.asarray(jax.device_get(losses), np.float32)
    return PretrainResult(nnx.merge(graphdef, params), losses, time.perf_counter() - t0)
