"""Fixed easy-to-hard order, the balanced held-out split and the data-reuse subsets of the paper.

All functions are deterministic: sorting is stable and every random choice takes an explicit seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from rl_scaling.data.problem import Problem


def curriculum_order(problems: Sequence[Problem]) -> list[Problem]:
    """`problems` sorted by difficulty, easy first; ties keep their input order (stable, no shuffle).

    Raises ValueError when a problem has no difficulty (how many, and the first ids).
    """
    missing = [p.id for p in problems if p.difficulty is None]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(problems)} problems have no difficulty (e.g. {missing[:3]}); "
            "a curriculum needs one per problem (a `difficulty` or `pass_rate` column)"
        )
    return sorted(problems, key=lambda p: p.difficulty)


def easy_hard_halves(problems: Sequence[Problem]) -> tuple[list[Problem], list[Problem]]:
    """The curriculum order cut in two: (easier floor(n/2) problems, harder ceil(n/2) problems)."""
    ordered = curriculum_order(problems)
    half = len(ordered) // 2
    return ordered[:half], ordered[half:]


def heldout_split(
    problems: Sequence[Problem], num_heldout: int, seed: int
) -> tuple[list[Problem], list[Problem]]:
    """(train, heldout): `num_heldout` problems drawn half from the easy half, half from the hard half.

    The odd one out (odd `num_heldout`) comes from the hard half. Both lists are in curriculum order;
    they are disjoint and together hold every problem once.
    """
    easy, hard = easy_hard_halves(problems)
    n_easy = num_heldout // 2
    n_hard = num_heldout - n_easy
    if num_heldout < 0 or n_easy > len(easy) or n_hard > len(hard):
        raise ValueError(
            f"cannot hold out {num_heldout} problems balanced from halves of {len(easy)} easy and "
            f"{len(hard)} hard problems"
        )
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(easy), size=n_easy, replace=False).tolist())
    chosen |= {len(easy) + i for i in rng.choice(len(hard), size=n_hard, replace=False).tolist()}
    ordered = easy + hard
    train = [p for i, p in enumerate(ordered) if i not in chosen]
    heldout = [p for i, p in enumerate(ordered) if i in chosen]
    return train, heldout


def stratified_sample(
    problems: Sequence[Problem], size: int, seed: int, num_strata: int = 10
) -> list[Problem]:
    """`size` distinct problems drawn evenly across difficulty, returned in curriculum order.

    The curriculum order is cut into `num_strata` equal-count strata; each stratum gives a share of
    `size` proportional to its count (largest-remainder rounding), drawn uniformly without replacement.
    """
    ordered = curriculum_order(problems)
    if not 0 <= size <= len(ordered):
        raise ValueError(f"cannot draw {size} distinct problems from {len(ordered)}")
    strata = np.array_split(np.arange(len(ordered)), max(1, min(num_strata, len(ordered))))
    exact = np.array([size * len(s) / len(ordered) for s in strata])
    quota = np.floor(exact).astype(int)
    # Largest remainder: the strata with the biggest fractional parts get the leftover draws.
    for k in np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]:
        quota[k] += 1
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [rng.choice(s, size=q, replace=False) for s, q in zip(strata, quota)] + [np.array([], int)]
    )
    return [ordered[i] for i in np.sort(picked)]


def reuse_subset(
    problems: Sequence[Problem],
    total_samples: int,
    tau: int,
    seed: int,
    num_strata: int = 10,
    layout: Literal["epochs", "blocked"] = "epochs",
) -> list[Problem]:
    """The data-reuse study's training sequence: total_samples/tau unique problems, each seen tau times.

    Args:
      problems: the pool to draw from (needs difficulties).
      total_samples: length of the returned sequence, in prompts (steps x prompts per step).
      tau: repeat count; must divide `total_samples`.
      seed: seed of the difficulty-stratified draw (`stratified_sample`).
      layout: "epochs" (default): the subset in curriculum order, repeated tau times back to back
        (each pass goes easy to hard). "blocked": every problem's tau copies adjacent, so the whole
        sequence runs easy to hard once, like the tau = 1 run.
    Returns:
      [total_samples] problems.
    """
    if tau < 1 or total_samples < 1:
        raise ValueError(f"tau and total_samples must be >= 1, got tau={tau}, total_samples={total_samples}")
    if total_samples % tau:
        raise ValueError(f"tau={tau} does not divide total_samples={total_samples}")
    subset = stratified_sample(problems, total_samples // tau, seed, num_strata)
    if layout == "epochs":
        return subset * tau
    if layout == "blocked":
        return [p for p in subset for _ in range(tau)]
    raise ValueError(f"unknown layout {layout!r}; known: 'epochs', 'blocked'")
