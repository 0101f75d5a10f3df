"""Experiment grids: expand a grid config into runs, run them resumably, gather their metrics.

A grid config is a Python file with `get_config()` returning an ml_collections.ConfigDict:

    name          str, for messages
    base_config   path of the training config every run starts from
    sizes         model config names, e.g. ("qwen2_5_0_5b", "qwen2_5_1_5b")
    param_counts  (optional) {model name: N}, the table's `size` column; models not listed get the
                  non-embedding count of their common.config preset (rl_scaling.accounting)
    variants      e.g. ("base", "instruct")
    seeds         e.g. (0, 1, 2)
    settings      {name: (values...)}: swept too, e.g. {"tau": (1, 2, 4)} or {"G": (4, 8)}
    overrides     nested {key: value}: fixed trainer overrides for every run (flattened to a.b=v)
    override_keys {coordinate: trainer key}: how model/variant/seed/settings reach the trainer,
                  e.g. {"tau": "data.reuse_tau"}; a coordinate not named passes under its own
                  name, one mapped to "" is not passed
    templated_overrides  (optional) nested {key: template}: overrides built from the coordinates,
                  e.g. {"model": {"path": "checkpoints/{model}-{variant}"}}
    command       (optional) argv template; see DEFAULT_COMMAND
    metric_keys   (optional) {column: metrics.jsonl key}; see DEFAULT_METRIC_KEYS

Every run gets a stable id (from its coordinates, e.g. "base-qwen2_5_0_5b-tau4-seed0") and the
workdir <root>/<run_id>. A run is finished when <workdir>/DONE exists; finished runs are skipped,
so a killed or crashed runner is resumed by running it again.

    python -m rl_scaling.grid run    --grid configs/grids/qwen2_5_family.py --root runs/family
    python -m rl_scaling.grid run    --grid ... --root ... --print   # commands only, for remote
    python -m rl_scaling.grid gather --grid ... --root ... --out runs/family/table.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import tqdm

from common import config as model_configs
from common.config_file import load_config
from common.metrics_writer import METRICS_FILENAME as METRICS_FILE
from common.metrics_writer import read_metrics
from rl_scaling import accounting
from rl_scaling.scaling import table as table_lib

DEFAULT_COMMAND = ("{python}", "-m", "rl_scaling.train", "--config={base_config}", "{overrides}",
                   "--workdir={workdir}")
# Table column -> key in metrics.jsonl (as rl_scaling.train writes them); a grid's metric_keys
# entry overrides single columns.
DEFAULT_METRIC_KEYS = {"C": "C", "D": "D", "L": "eval/L"}
DONE_FILE, RUN_FILE, LOG_FILE = "DONE", "run.json", "train.log"
REQUIRED_GRID_KEYS = ("base_config", "sizes", "variants", "seeds")
COORDINATES = ("model", "variant", "seed")
# Names a setting may not take: the coordinates and the other columns of a gathered table.
RESERVED_NAMES = COORDINATES + ("size", "step", "C", "D", "L", "run_id", "settings")


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of the grid. coords: model, variant, seed and every setting (name -> value)."""

    run_id: str
    coords: dict

    def workdir(self, root) -> pathlib.Path:
        return pathlib.Path(root) / self.run_id

    def settings(self) -> dict:
        return {k: v for k, v in self.coords.items() if k not in COORDINATES}


def load_grid_config(path):
    """get_config() of the grid config file at `path` (a ConfigDict); raises naming missing keys."""
    grid = load_config(path)
    missing = [k for k in REQUIRED_GRID_KEYS if k not in grid]
    if missing:
        raise ValueError(f"{path}: grid config lacks key(s) {missing}; keys found: {sorted(grid)}")
    return grid


def _token(value) -> str:
    """A value as a run-id fragment: letters, digits, '_' and '.' only."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(value)).strip("_")


def run_id_of(coords: dict) -> str:
    """Stable id: variant-model-<setting><value>...-seed<seed> (settings in alphabetical order)."""
    settings = [f"{_token(k)}{_token(v)}" for k, v in sorted(coords.items())
                if k not in COORDINATES]
    return "-".join([_token(coords["variant"]), _token(coords["model"]), *settings,
                     f"seed{_token(coords['seed'])}"])


def _get(grid, key, default):
    return grid[key] if key in grid else default


def expand_grid(grid) -> list[Run]:
    """All runs of the grid: product of variants x sizes x settings x seeds (seeds innermost)."""
    settings = dict(_get(grid, "settings", {}))
    names = sorted(settings)
    for name in names:
        if name in RESERVED_NAMES:
            raise ValueError(f"setting {name!r} clashes with a coordinate or table column "
                             f"{RESERVED_NAMES}")
        if isinstance(settings[name], (str, bytes)) or not hasattr(settings[name], "__iter__"):
            raise ValueError(f"setting {name!r} must list its values, got {settings[name]!r}")
    runs = []
    for variant, model, *values, seed in itertools.product(
            grid.variants, grid.sizes, *(settings[n] for n in names), grid.seeds):
        coords = {"model": model, "variant": variant, **dict(zip(names, values)), "seed": seed}
        runs.append(Run(run_id_of(coords), coords))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"two runs share the id {dup!r}: grid values differ only in characters "
                         f"that ids drop")
    if not runs:
        raise ValueError("the grid is empty (a list of sizes, variants, seeds or settings is "
                         "empty)")
    return runs


def _flatten(tree, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if hasattr(value, "items"):
            items.extend(_flatten(value, path + "."))
        else:
            items.append((path, value))
    return items


def trainer_overrides(grid, run: Run) -> list[tuple[str, object]]:
    """(trainer config key, value) pairs: the fixed overrides, the run's coordinates (renamed by
    override_keys), then the templated overrides filled in with the coordinates."""
    keys = dict(_get(grid, "override_keys", {}))
    coords = [(keys.get(name, name), value) for name, value in run.coords.items()]
    templated = []
    for key, template in _flatten(_get(grid, "templated_overrides", {})):
        try:
            templated.append((key, str(template).format(**run.coords)))
        except KeyError as e:
            raise ValueError(f"templated override {key}={template!r} names unknown field {e}; "
                             f"fields: {sorted(run.coords)}") from None
    return _flatten(_get(grid, "overrides", {})) + [(k, v) for k, v in coords if k] + templated


def build_command(grid, run: Run, root) -> list[str]:
    """The argv of one run from the grid's command template.

    Template fields: {python}, {base_config}, {workdir}, {run_id}, {root} and every coordinate;
    the element "{overrides}" expands to one "--config.<key>=<value>" per trainer override.
    """
    fields = {"python": sys.executable, "base_config": grid.base_config,
              "workdir": str(run.workdir(root)), "run_id": run.run_id, "root": str(root),
              **run.coords}
    argv = []
    for part in _get(grid, "command", DEFAULT_COMMAND):
        if part == "{overrides}":
            argv.extend(f"--config.{k}={v}" for k, v in trainer_overrides(grid, run))
        else:
            try:
                argv.append(part.format(**fields))
            except KeyError as e:
                raise ValueError(f"command template {part!r} names unknown field {e}; "
                                 f"fields: {sorted(fields)}") from None
    return argv


def is_finished(run: Run, root) -> bool:
    return (run.workdir(root) / DONE_FILE).exists()


def param_count(grid, model: str) -> float | None:
    """N of a model name: grid.param_counts if listed, else the non-embedding parameter count of
    the common.config preset of that name, else None (unknown)."""
    counts = dict(_get(grid, "param_counts", {}))
    if model in counts:
        return float(counts[model])
    try:
        return float(accounting.non_embedding_params(model_configs.get_preset(model)))
    except KeyError:
        return None


def _run_record(grid, run: Run) -> dict:
    """What gather needs of a run (also written to <workdir>/run.json)."""
    return {"run_id": run.run_id, **run.coords, "size": param_count(grid, run.coords["model"]),
            "settings": sorted(run.settings())}


def _write_run_file(grid, run: Run, root) -> None:
    workdir = run.workdir(root)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RUN_FILE).write_text(json.dumps(_run_record(grid, run), indent=1) + "\n")


def _run_one(argv: list[str], log_path: pathlib.Path) -> int:
    """Run argv with output appended to log_path; the child is stopped if we are interrupted."""
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            return child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            raise


def run_grid(grid, root, only: str | None = None, stop_on_failure: bool = False) -> dict:
    """Run every unfinished run one after another as a local subprocess.

    Args:
      only: regular expression; run only run ids it matches (re.search).
      stop_on_failure: stop at the first run whose command exits non-zero.
    Returns:
      {"ran": [...], "skipped": [...finished before...], "failed": {run_id: exit code}}.
    """
    root = pathlib.Path(root)
    runs = [r for r in expand_grid(grid) if only is None or re.search(only, r.run_id)]
    summary = {"ran": [], "skipped": [], "failed": {}}
    for run in tqdm.tqdm(runs, desc=_get(grid, "name", "grid"), unit="run"):
        if is_finished(run, root):
            summary["skipped"].append(run.run_id)
            continue
        _write_run_file(grid, run, root)
        code = _run_one(build_command(grid, run, root), run.workdir(root) / LOG_FILE)
        if code == 0 and not is_finished(run, root):
            code = -1   # the trainer exited cleanly without writing DONE
        if code != 0:
            summary["failed"][run.run_id] = code
            tqdm.tqdm.write(f"run {run.run_id} failed (exit {code}); log: "
                            f"{run.workdir(root) / LOG_FILE}")
            if stop_on_failure:
                break
        else:
            summary["ran"].append(run.run_id)
    return summary


def pending_commands(grid, root, only: str | None = None) -> list[str]:
    """Shell-quoted commands of the unfinished runs (for remote hardware)."""
    return [shlex.join(build_command(grid, run, root)) for run in expand_grid(grid)
            if (only is None or re.search(only, run.run_id)) and not is_finished(run, root)]


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
    keys = {**DEFAULT_METRIC_KEYS, **dict(_get(grid, "metric_keys", {}) if grid else {})}
    if grid is not None:
        records = [_run_record(grid, run) for run in expand_grid(grid)]
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rl_scaling.grid",
                                description=__doc__.split("\n")[0])
    p.add_argument("action", choices=("run", "gather"))
    p.add_argument("--grid", help="grid config file (python, get_config()); optional for gather")
    p.add_argument("--root", required=True, help="directory holding one workdir per run")
    p.add_argument("--only", default=None, help="run: regular expression on run ids")
    p.add_argument("--print", action="store_true",
                   help="run: print the commands of unfinished runs instead of running them")
    p.add_argument("--stop-on-failure", action="store_true")
    p.add_argument("--out", help="gather: table path (.csv or .parquet)")
    p.add_argument("--include-unfinished", action="store_true",
                   help="gather: runs without DONE too")
    args = p.parse_args(argv)
    # A SIGTERM stops the current trainer too (through _run_one's cleanup) instead of orphaning it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        grid = load_grid_config(args.grid) if args.grid else None
        if args.action == "run" and grid is None:
            raise ValueError("run needs --grid")
        if args.action == "run" and args.print:
            print("\n".join(pending_commands(grid, args.root, args.only)))
        elif args.action == "run":
            summary = run_grid(grid, args.root, args.only, args.stop_on_failure)
            print(f"ran {len(summary['ran'])}, skipped {len(summary['skipped'])} finished, "
                  f"failed {len(summary['failed'])}: {sorted(summary['failed'])}")
            return 1 if summary["failed"] else 0
        else:
            if not args.out:
                raise ValueError("gather needs --out TABLE.csv|.parquet")
            table = gather(args.root, grid, args.include_unfinished)
            print(f"wrote {table_lib.write_metrics_table(table, args.out)} "
                  f"({table_lib.table_length(table)} rows)")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
