"""Fixed easy-to-hard order, the balanced held-out split and the data-reuse subsets of the paper.

All functions are deterministic: sorting is stable and every random choice takes an explicit seed.
`study_split` is the study's held-out protocol as the GRPO trainer applies it to a problem pool.
"""

from __future__ import annotations

import dataclasses
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
            "a curriculum needs one per problem (a `difficulty` or `pass_rate` column, or the field named by "
            "data.pass_rate_column / data.difficulty_column: docs/data.md)"
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


WITHOUT_DIFFICULTY_CHOICES = ("error", "file_order")


@dataclasses.dataclass(frozen=True)
class StudySplit:
    """What `study_split` gives the trainer.

    train: the training stream, in curriculum order when `curriculum` is True, else in file order.
    heldout: the held-out problems (curriculum order when difficulties vary, else file order).
    curriculum: whether `train` is in curriculum order.
    notes: what the run should tell its user (where the split departs from the study's protocol).
    """

    train: list[Problem]
    heldout: list[Problem]
    curriculum: bool
    notes: tuple[str, ...] = ()


def _missing_difficulty_error(missing: Sequence[str], total: int, source: str) -> ValueError:
    some = "none" if len(missing) == total else f"only {total - len(missing)}"
    return ValueError(
        f"data.curriculum=True needs a difficulty for every problem, and {some} of the {total} problems of "
        f"{source or 'the pool'} have one (without: e.g. {list(missing[:3])}). Provide them: a `difficulty` or "
        "`pass_rate` column, or name the field with data.pass_rate_column (e.g. 'qwen2.5_7b_pass_rate' in a "
        "verl table's extra_info; difficulty = 1 - pass rate) or data.difficulty_column (docs/data.md). Or "
        "turn the curriculum off: data.curriculum=False (file order, a seeded random held-out split), or "
        "data.without_difficulty='file_order' to do that only for sources without difficulties."
    )


def _random_split(problems: Sequence[Problem], num_heldout: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, heldout) by a seeded random draw, both in file order."""
    order = np.random.default_rng(seed).permutation(len(problems))
    heldout = [problems[i] for i in sorted(order[:num_heldout])]
    train = [problems[i] for i in sorted(order[num_heldout:])]
    return train, heldout


def study_split(
    problems: Sequence[Problem],
    num_heldout: int,
    seed: int,
    curriculum: bool = True,
    without_difficulty: str = "error",
    source: str = "",
) -> StudySplit:
    """The study's held-out protocol: a balanced held-out split and the training stream's order.

    - Every problem has a difficulty and they differ: `heldout_split` (half the held-out problems from
      the easier half, half from the harder, drawn with `seed`); the training stream in curriculum order
      (`curriculum=True`) or in file order.
    - One difficulty for all (e.g. one synthetic level): nothing to balance or order; a seeded random
      held-out draw, file order.
    - Some or all without a difficulty: `curriculum=True` raises ValueError saying how to provide them
      or turn the curriculum off, unless `without_difficulty="file_order"`; otherwise a seeded random
      held-out draw, file order, and a note saying so.
    `source` names the pool in messages (e.g. the data.source config value).
    """
    if without_difficulty not in WITHOUT_DIFFICULTY_CHOICES:
        raise ValueError(f"unknown without_difficulty {without_difficulty!r}; choices: "
                         f"{list(WITHOUT_DIFFICULTY_CHOICES)}")
    missing = [p.id for p in problems if p.difficulty is None]
    if missing and curriculum and without_difficulty == "error":
        raise _missing_difficulty_error(missing, len(problems), source)
    if not missing and len({p.difficulty for p in problems}) > 1:
        train, heldout = heldout_split(problems, num_heldout, seed)
        if not curriculum:
            position = {id(p): i for i, p in enumerate(problems)}
            train = sorted(train, key=lambda p: position[id(p)])
        return StudySplit(train, heldout, curriculum)
    train, heldout = _random_split(problems, num_heldout, seed)
    if not missing:
        return StudySplit(train, heldout, curriculum)
    order = (", and training runs in file order instead of the curriculum (data.without_difficulty='file_order')"
             if curriculum else "")
    note = (f"{len(missing)} of the {len(problems)} problems of {source or 'the pool'} have no difficulty: the "
            f"held-out split is a seeded random draw, not the study's easy/hard balance{order}; give difficulties "
            "(data.pass_rate_column or data.difficulty_column, docs/data.md) for the study's protocol")
    return StudySplit(train, heldout, False, (note,))


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
