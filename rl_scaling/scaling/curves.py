"""From table rows to the points a fit sees: per-seed rows, seed averages, early/late splits.

Two containers:
  SeedRows - one point per (size, seed, step) evaluation, step 0 dropped, X and L validated.
  Curves   - one point per (size, step): seeds averaged (the paper averages seeds before fitting).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rl_scaling.scaling import table as table_lib


@dataclasses.dataclass(frozen=True)
class SeedRows:
    """Per-seed evaluation points, all arrays of shape (R,).

    size: parameter count N; seed: seed id; step: optimiser step (> 0);
    x: compute C (FLOPs) or data D (prompts); loss: L = 1 - pass@1.
    """

    size: np.ndarray
    seed: np.ndarray
    step: np.ndarray
    x: np.ndarray
    loss: np.ndarray


@dataclasses.dataclass(frozen=True)
class Curves:
    """Seed-averaged points, one per (size, step), sorted by size then step; arrays shape (P,)."""

    size: np.ndarray
    step: np.ndarray
    x: np.ndarray
    loss: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """The distinct sizes, ascending, shape (S,)."""
        return np.unique(self.size)

    def select(self, mask) -> "Curves":
        mask = np.asarray(mask, dtype=bool)
        return Curves(self.size[mask], self.step[mask], self.x[mask], self.loss[mask])

    def of_size(self, n) -> "Curves":
        return self.select(self.size == n)

    def __len__(self) -> int:
        return len(self.size)


def seed_rows_from_table(table, x_name: str) -> SeedRows:
    """Validated per-seed points for X = `x_name` ("C" or "D") from one variant's table rows.

    Drops step 0 (C = D = 0 there). Raises ValueError, naming the column, for non-positive or
    non-finite size/X/L and for rows that are not unique per (size, seed, step) (another setting,
    e.g. tau, varies: filter the table first).
    """
    if x_name not in ("C", "D"):
        raise ValueError(f"x must be 'C' or 'D', got {x_name!r}")
    table_lib.check_columns(table, ("size", "seed", "step", x_name, "L"))
    keep = np.asarray(table["step"]) > 0
    rows = {k: np.asarray(table[k])[keep] for k in ("size", "seed", "step", x_name, "L")}
    if len(rows["L"]) == 0:
        raise ValueError("no evaluation rows with step > 0")
    for name in ("size", x_name, "L"):
        values = rows[name].astype(np.float64)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"column {name!r} must be positive and finite (step > 0); {int(bad.sum())} bad "
                f"row(s), e.g. size={rows['size'][i]} seed={rows['seed'][i]} "
                f"step={rows['step'][i]} {name}={rows[name][i]}")
    keys = np.stack([rows["size"].astype(np.float64), rows["seed"].astype(np.float64),
                     rows["step"].astype(np.float64)], axis=1)
    uniq, counts = np.unique(keys, axis=0, return_counts=True)
    if (counts > 1).any():
        dup = uniq[np.argmax(counts > 1)]
        raise ValueError(
            f"rows are not unique per (size, seed, step), e.g. size={dup[0]:g} seed={dup[1]:g} "
            f"step={dup[2]:g} appears {counts.max()} times: another setting varies; select one")
    return SeedRows(size=rows["size"].astype(np.float64), seed=rows["seed"],
                    step=rows["step"].astype(np.int64), x=rows[x_name].astype(np.float64),
                    loss=rows["L"].astype(np.float64))


def average_seeds(rows: SeedRows, weights=None) -> Curves:
    """Average L and X over seeds for every (size, step).

    Args:
      rows: per-seed points, shape (R,).
      weights: optional (R,) non-negative row weights (a bootstrap draw counts a seed several
        times); groups whose total weight is 0 are dropped.
    Returns:
      Curves sorted by size then step.
    """
    w = np.ones(len(rows.loss)) if weights is None else np.asarray(weights, dtype=np.float64)
    keys = np.stack([rows.size, rows.step.astype(np.float64)], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    total = np.bincount(inverse, weights=w, minlength=len(uniq))
    keep = total > 0
    safe = np.where(keep, total, 1.0)
    loss = np.bincount(inverse, weights=w * rows.loss, minlength=len(uniq)) / safe
    x = np.bincount(inverse, weights=w * rows.x, minlength=len(uniq)) / safe
    return Curves(size=uniq[keep, 0], step=uniq[keep, 1].astype(np.int64), x=x[keep],
                  loss=loss[keep])


def bootstrap_seed_weights(rows: SeedRows, rng: np.random.Generator) -> np.ndarray:
    """Row weights (R,) of one bootstrap draw: per size, resample its seeds with replacement.

    A seed drawn twice weighs 2 in `average_seeds`; one not drawn weighs 0.
    """
    weights = np.zeros(len(rows.loss))
    for n in np.unique(rows.size):
        in_size = rows.size == n
        seeds = np.unique(rows.seed[in_size])
        drawn, counts = np.unique(rng.choice(seeds, size=len(seeds), replace=True),
                                  return_counts=True)
        for seed, count in zip(drawn, counts):
            weights[in_size & (rows.seed == seed)] = count
    return weights


def split_early(curves: Curves, fraction: float,
                min_points: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Masks (P,) of the first `fraction` of every size's evaluation points and of the rest.

    Each size keeps at least `min_points` early points and at least one late point; raises
    ValueError naming the size otherwise.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"intra fraction must be in (0, 1), got {fraction}")
    early = np.zeros(len(curves), dtype=bool)
    for n in curves.sizes:
        idx = np.flatnonzero(curves.size == n)
        idx = idx[np.argsort(curves.step[idx])]
        n_fit = max(min_points, int(np.ceil(fraction * len(idx))))
        if n_fit >= len(idx):
            raise ValueError(f"size {n:g} has {len(idx)} evaluation points: too few to fit "
                             f"{n_fit} and predict the rest")
        early[idx[:n_fit]] = True
    return early, ~early
