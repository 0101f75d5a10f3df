"""The contract between token ids and a model's vocabulary: every id the model reads is a row of its embedding,
0 <= id < vocab_size. An id outside reads no row — the gather gives NaN, and every logit and log-probability
after it is NaN — so such ids are refused before they reach the model: a tokenizer at load (`fit_tokenizer`),
prompts and the pad id at each sampler call (`check_prompt_ids`, `check_pad_id`).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np


def fit_tokenizer(tokenizer, vocab_size: int, source):
    """`tokenizer`, checked against a model whose embedding has `vocab_size` rows (loaded from `source`, a path
    named in messages). Returns the same tokenizer object.

    Every id the tokenizer can produce (its vocabulary, added and special tokens included) must be below
    vocab_size: otherwise ValueError naming both sizes. The pad token is the exception, because padding only
    fills masked slots: a pad id beyond the embedding (an added `<pad>` the model was never resized for) is
    replaced by the eos token, with a warning. More rows than ids is normal (Qwen2.5 pads its embedding to
    151,936 rows for 151,665 ids).
    """
    pad_id = tokenizer.pad_token_id
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    vocab = tokenizer.get_vocab()
    beyond = sorted((i, token) for token, i in vocab.items() if i >= vocab_size and i != pad_id)
    if beyond:
        count = max(vocab.values()) + 1
        raise ValueError(
            f"{source}: tokenizer vocab {count} (ids up to {count - 1}, tokenizer {name!r}) does not fit the "
            f"model's vocab_size {vocab_size}: {len(beyond)} id(s) have no embedding row, e.g. "
            f"{', '.join(f'{token!r} = {i}' for i, token in beyond[:3])}; use the tokenizer this model was "
            f"trained with")
    if pad_id is not None and pad_id >= vocab_size:
        eos_id = tokenizer.eos_token_id
        if eos_id is None or eos_id >= vocab_size:
            raise ValueError(
                f"{source}: the pad id {pad_id} ({tokenizer.pad_token!r}) is beyond the model's vocab_size "
                f"{vocab_size}, and there is no eos token inside it to pad with instead")
        warnings.warn(
            f"{source}: the pad id {pad_id} ({tokenizer.pad_token!r}) is beyond the model's vocab_size "
            f"{vocab_size}: padding with the eos token {tokenizer.eos_token!r} (id {eos_id}) instead",
            stacklevel=2)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_prompt_ids(prompt_ids: Sequence[Sequence[int]], vocab_size: int) -> None:
    """Raise ValueError naming the first prompt that holds an id outside [0, vocab_size)."""
    for i, prompt in enumerate(prompt_ids):
        ids = np.asarray(prompt, np.int64)
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        if bad.size:
            raise ValueError(
                f"prompt {i} holds token id {int(bad[0])}, outside the model's vocabulary (vocab_size "
                f"{vocab_size}, ids 0..{vocab_size - 1}): a tokenizer made for another model?")


def check_pad_id(pad_id: int, vocab_size: int) -> None:
    """Raise ValueError unless `pad_id` is a row of the embedding (a pad outside it turns every padded prompt's
    logits into NaN)."""
    if not 0 <= pad_id < vocab_size:
        raise ValueError(f"pad id {pad_id} is outside the model's vocabulary (vocab_size {vocab_size}, ids "
                         f"0..{vocab_size - 1})")
