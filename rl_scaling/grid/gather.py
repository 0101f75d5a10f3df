"""Gathering a grid: the evaluation points of every finished run under a root -> one table (columns
variant, size, seed, step, C, D, L, model, run_id and one per setting) for rl_scaling.scaling."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from common.metrics_writer import METRICS_FILENAME as METRICS_FILE
from common.metrics_writer import read_metrics
from rl_scaling.grid.expand import expand_grid, run_record
from rl_scaling.grid.run import DONE_FILE, RUN_FILE

# Table column -> key in metrics.jsonl (as the trainer writes them); a grid's metric_keys entry overrides
# single columns.
DEFAULT_METRIC_KEYS = {"C": "C", "D": "D", "L": "eval/L"}


def read_metrics_jsonl(path, keys: dict = DEFAULT_METRIC_KEYS) -> dict:
    """Evaluation points of one run: {"step", "C", "D", "L"} arrays of shape (E,).

    Lines (common.metrics_writer format, one {"step": s, ...} object each) are merged per step,
    a later line's keys winning, so C/D logged on a training line and L on an evaluation line of
    the same step combine; steps without the L key are not evaluations.
    """
    by_step = {}
    for record in read_metrics(path):
        by_step.setdefault(int(record["step"]), {}).update(record)
    columns = {"step": [], "C": [], "D": [], "L": []}
    for step in sorted(by_step):
        record = by_step[step]
        if keys["L"] not in record:
            continue
        for column in ("C", "D"):
            if keys[column] not in record:
                raise ValueError(f"{path}: step {step} has {keys['L']!r} but no {keys[column]!r} "
                                 f"(column {column}); keys: {sorted(record)}")
        columns["step"].append(step)
        for column in ("C", "D", "L"):
            columns[column].append(float(record[keys[column]]))
    return {k: np.asarray(v) for k, v in columns.items()}


def gather(root, grid=None, include_unfinished: bool = False) -> dict:
    """One table of every run under `root`: columns variant, size, seed, step, C, D, L, model,
    run_id and one column per setting.

    With `grid`, runs come from the grid's expansion; without it, from each <root>/*/run.json.
    Only finished runs (DONE) unless include_unfinished. Raises if a run has no parameter count.
    """
    root = pathlib.Path(root)
    keys = {**DEFAULT_METRIC_KEYS, **dict(grid.get("metric_keys", {}) if grid else {})}
    if grid is not None:
        records = [run_record(grid, run) for run in expand_grid(grid)]
    else:
        records = [json.loads(p.read_text()) for p in sorted(root.glob(f"*/{RUN_FILE}"))]
    parts = []
    for record in records:
        workdir = root / record["run_id"]
        finished = (workdir / DONE_FILE).exists()
        if not (finished or include_unfinished):
            continue
        if not (workdir / METRICS_FILE).exists():
            if finished:
                raise ValueError(f"run {record['run_id']} is finished but has no "
                                 f"{workdir / METRICS_FILE}")
            continue
        if record.get("size") is None:
            raise ValueError(f"run {record['run_id']}: no parameter count for model "
                             f"{record['model']!r} (not a common.config preset); add it to the "
                             f"grid's param_counts")
        metrics = read_metrics_jsonl(workdir / METRICS_FILE, keys)
        n = len(metrics["step"])
        coords = {"variant": record["variant"], "size": float(record["size"]),
                  "seed": record["seed"], "model": record["model"], "run_id": record["run_id"],
                  **{name: record[name] for name in record["settings"]}}
        parts.append({**{k: np.full(n, v, dtype=object if isinstance(v, str) else None)
                         for k, v in coords.items()}, **metrics})
    if not parts:
        raise ValueError(f"no {'' if include_unfinished else 'finished '}runs with "
                         f"{METRICS_FILE} under {root}")
    every, shared = set().union(*parts), set.intersection(*map(set, parts))
    if every != shared:
        raise ValueError(f"runs under {root} disagree on their settings columns "
                         f"{sorted(every - shared)}: gather one grid at a time")
    order = ["variant", "size", "seed", "step", "C", "D", "L", "model", "run_id"]
    names = order + sorted(shared - set(order))
    return {k: np.concatenate([p[k] for p in parts]) for k in names}
