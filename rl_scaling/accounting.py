"""Parameter counts, compute C and data D of GRPO training, as the RL scaling study defines them.

Paper's compute: C = Σ_steps 6 · N · T_step, N the non-embedding parameter count, T_step the tokens
processed in a step (prompt + response, all G samples of every prompt). Data: D = steps × prompts
per step (G samples not counted; a prompt seen again counts again).

The fuller count ``c_full`` reported beside it adds up, per step (FLOPs, 1 multiply-add = 2 FLOPs):
- rollout: prefill 2·N per prompt token, decode 2·N per generated token;
- old-policy log-prob forward 2·N per token (prompt + response), when recomputed by the trainer;
- reference log-prob forward 2·N per token, when the KL term is on (kl_coef > 0);
- training 6·N per token (forward 2·N + backward 4·N) per pass over the batch (``ppo_epochs``);
- attention scores and values: a token at position t (1-based) attends to t keys, costing
  2·2·H·hd·t FLOPs per layer forward (QKᵀ and AV). Summed over a causal sequence of S tokens this is
  4·L·H·hd·S(S+1)/2. Counted once for rollout, once per extra forward and 3× per training pass.
  Needs the per-sequence lengths; without them the attention part is 0. Only the causal half is
  counted (useful FLOPs), not what a dense kernel computes; softmax and norms are not counted;
- LM head 2·V·d per response token for every forward (rollout, old, reference), 6·V·d in training;
  logits at prompt positions are not needed and not counted. Embedding lookups are free.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

_CONFIG_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
    "head_dim", "attention_bias", "tie_embeddings",
)


def _check_config(cfg) -> None:
    missing = [name for name in _CONFIG_FIELDS if not hasattr(cfg, name)]
    if missing:
        raise AttributeError(f"model config {type(cfg).__name__} lacks {missing} (needed to count parameters)")


def non_embedding_params(cfg) -> int:
    """Parameters of the decoder stack and final norm: everything but the embedding and LM head.

    Per layer: q d·H·hd, k and v d·K·hd each, o H·hd·d, (biases H·hd + 2·K·hd if attention_bias),
    gate/up d·F each, down F·d, two RMSNorm weights d each. Plus the final norm d.
    ``cfg`` needs the attributes in ``_CONFIG_FIELDS`` (e.g. ``common.config.ModelConfig``).
    """
    _check_config(cfg)
    d, f = cfg.hidden_size, cfg.intermediate_size
    q_width = cfg.num_heads * cfg.head_dim
    kv_width = cfg.num_kv_heads * cfg.head_dim
    attention = d * q_width + 2 * d * kv_width + q_width * d
    if cfg.attention_bias:
        attention += q_width + 2 * kv_width
    mlp = 3 * d * f
    per_layer = attention + mlp + 2 * d
    return cfg.num_layers * per_layer + d


def embedding_params(cfg) -> int:
    """Input embedding V·d, plus the LM head V·d when it is not tied to the embedding."""
    _check_config(cfg)
    table = cfg.vocab_size * cfg.hidden_size
    return table if cfg.tie_embeddings else 2 * table


def total_params(cfg) -> int:
    """All parameters: ``non_embedding_params + embedding_params``."""
    return non_embedding_params(cfg) + embedding_params(cfg)


def causal_context_tokens(sequence_lengths: Sequence[int]) -> int:
    """Σ over sequences of S(S+1)/2: the total number of (query, key) pairs under a causal mask."""
    total = 0
    for length in sequence_lengths:
        length = int(length)
        if length < 0:
            raise ValueError(f"sequence length must be >= 0, got {length}")
        total += length * (length + 1) // 2
    return total


@dataclasses.dataclass(frozen=True)
class StepCompute:
    """Tokens and FLOPs of one GRPO step. FLOP fields are exact Python ints."""

    prompt_tokens: int  # Σ prompt lengths over all sampled sequences (a prompt counts G times)
    response_tokens: int  # Σ generated tokens over all sampled sequences
    n_params: int  # N used for c_paper
    c_paper: int  # 6 · N · (prompt_tokens + response_tokens)
    rollout_prefill: int
    rollout_decode: int
    old_logprob_forward: int
    reference_forward: int
    training: int
    attention: int
    lm_head: int

    @property
    def tokens(self) -> int:
        """T_step = prompt_tokens + response_tokens."""
        return self.prompt_tokens + self.response_tokens

    @property
    def c_full(self) -> int:
        """Sum of every counted part (see the module docstring), FLOPs."""
        return (self.rollout_prefill + self.rollout_decode + self.old_logprob_forward
                + self.reference_forward + self.training + self.attention + self.lm_head)

    def as_dict(self) -> dict[str, int]:
        """All fields plus ``tokens`` and ``c_full``."""
        return {**dataclasses.asdict(self), "tokens": self.tokens, "c_full": self.c_full}


def step_compute(
    cfg,
    prompt_tokens: int,
    response_tokens: int,
    *,
    sequence_lengths: Optional[Sequence[int]] = None,
    kl_coef: float = 0.0,
    old_logprob_forward: bool = True,
    ppo_epochs: int = 1,
    n_params: Optional[int] = None,
) -> StepCompute:
    """FLOPs of one GRPO step.

    Args:
      cfg: model config (see ``non_embedding_params``).
      prompt_tokens: prompt tokens over all sampled sequences (num_prompts · G · mean prompt length).
      response_tokens: generated tokens over all sampled sequences.
      sequence_lengths: prompt + response length of each sampled sequence, for the attention part;
        must sum to prompt_tokens + response_tokens. None leaves attention at 0.
      kl_coef: > 0 adds the reference forward.
      old_logprob_forward: whether the trainer recomputes old-policy log-probs (verl does, always).
      ppo_epochs: passes of optimisation over the step's batch (1 in the study; the number of
        mini-batches does not change FLOPs).
      n_params: N for c_paper; default ``non_embedding_params(cfg)`` (the paper's code used the
        nominal size, e.g. 7e9, which this lets you reproduce). c_full always uses the exact count.
    """
    for name, value in (("prompt_tokens", prompt_tokens), ("response_tokens", response_tokens)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if ppo_epochs < 1:
        raise ValueError(f"ppo_epochs must be >= 1, got {ppo_epochs}")
    prompt_tokens, response_tokens = int(prompt_tokens), int(response_tokens)
    tokens = prompt_tokens + response_tokens
    n = non_embedding_params(cfg)
    n_paper = n if n_params is None else int(n_params)

    context = 0
    if sequence_lengths is not None:
        lengths = [int(s) for s in sequence_lengths]
        if sum(lengths) != tokens:
            raise ValueError(
                f"sequence_lengths sum to {sum(lengths)} tokens but prompt_tokens + response_tokens "
                f"= {tokens}"
            )
        context = causal_context_tokens(lengths)
    forwards = 1 + int(old_logprob_forward) + int(kl_coef > 0)  # rollout, old, reference
    attention_forward = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context
    lm_head_forward = 2 * cfg.vocab_size * cfg.hidden_size * response_tokens

    return StepCompute(
        prompt_tokens=prompt_tokens,
        response_tokens=response_tokens,
        n_params=n_paper,
        c_paper=6 * n_paper * tokens,
        rollout_prefill=2 * n * prompt_tokens,
        rollout_decode=2 * n * response_tokens,
        old_logprob_forward=2 * n * tokens if old_logprob_forward else 0,
        reference_forward=2 * n * tokens if kl_coef > 0 else 0,
        training=6 * n * tokens * ppo_epochs,
        attention=attention_forward * (forwards + 3 * ppo_epochs),
        lm_head=lm_head_forward * (forwards + 3 * ppo_epochs),
    )


_PARTS = ("rollout_prefill", "rollout_decode", "old_logprob_forward", "reference_forward",
          "training", "attention", "lm_head")


class ComputeLedger:
    """Running totals over steps: C (paper), C_full and its parts (FLOPs), D (prompts), tokens.

    ``state_dict()`` is a flat dict of plain Python ints (exact at any size); save it as JSON beside
    the checkpoint, not as int64 arrays (C passes 2**63 FLOPs for the largest runs).
    """

    _INT_FIELDS = ("steps", "data", "tokens", "prompt_tokens", "response_tokens", "c_paper", "c_full") + _PARTS

    def __init__(self) -> None:
        self._totals = {name: 0 for name in self._INT_FIELDS}

    def add_step(self, step: StepCompute, num_prompts: int) -> None:
        """Adds one step's compute; ``num_prompts`` is the prompts drawn this step (D += num_prompts)."""
        if int(num_prompts) != num_prompts or num_prompts < 0:
            raise ValueError(f"num_prompts must be a non-negative integer, got {num_prompts!r}")
        t = self._totals
        t["steps"] += 1
        t["data"] += int(num_prompts)
        t["tokens"] += step.tokens
        t["prompt_tokens"] += step.prompt_tokens
        t["response_tokens"] += step.response_tokens
        t["c_paper"] += step.c_paper
        t["c_full"] += step.c_full
        for name in _PARTS:
            t[name] += getattr(step, name)

    @property
    def compute(self) -> int:
        """C, the paper's compute, FLOPs."""
        return self._totals["c_paper"]

    @property
    def compute_full(self) -> int:
        """C_full, FLOPs."""
        return self._totals["c_full"]

    @property
    def data(self) -> int:
        """D, prompts consumed."""
        return self._totals["data"]

    @property
    def tokens(self) -> int:
        """Tokens processed (prompt + response, all samples)."""
        return self._totals["tokens"]

    @property
    def steps(self) -> int:
        return self._totals["steps"]

    def metrics(self) -> dict[str, float]:
        """Totals for a metrics line: C, C_full, D, tokens (floats, for logging only)."""
        return {"C": float(self.compute), "C_full": float(self.compute_full),
                "D": float(self.data), "tokens": float(self.tokens)}

    def state_dict(self) -> dict[str, int]:
        """A copy of every running total as a plain int."""
        return dict(self._totals)

    def load_state_dict(self, state: dict) -> None:
        """Restores totals saved by ``state_dict``; raises on missing, unknown or non-integer keys."""
        missing = sorted(set(self._INT_FIELDS) - set(state))
        unknown = sorted(set(state) - set(self._INT_FIELDS))
        if missing or unknown:
            raise KeyError(f"ComputeLedger state: missing keys {missing}, unknown keys {unknown}")
        restored = {}
        for name in self._INT_FIELDS:
            value = state[name]
            if isinstance(value, bool) or int(value) != value:
                raise ValueError(f"ComputeLedger state[{name!r}] must be an integer, got {value!r}")
            restored[name] = int(value)
        self._totals = restored
