"""Expanding a grid: its config file -> the list of runs, each with its id, its trainer overrides and what
the table records of it (see rl_scaling/grid/__init__.py for the config's keys). Pure: reads the config
file, touches nothing else."""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import re

from common import config as model_configs
from common.config_file import load_config
from rl_scaling import accounting

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


def expand_grid(grid) -> list[Run]:
    """All runs of the grid: product of variants x sizes x settings x seeds (seeds innermost)."""
    settings = dict(grid.get("settings", {}))
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


def flatten(tree, prefix: str = "") -> list[tuple[str, object]]:
    """Nested mapping -> [("a.b", value), ...] (the trainer's --config.a.b=value keys)."""
    items = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if hasattr(value, "items"):
            items.extend(flatten(value, path + "."))
        else:
            items.append((path, value))
    return items


def trainer_overrides(grid, run: Run) -> list[tuple[str, object]]:
    """(trainer config key, value) pairs: the fixed overrides, the run's coordinates (renamed by
    override_keys), then the templated overrides filled in with the coordinates."""
    keys = dict(grid.get("override_keys", {}))
    coords = [(keys.get(name, name), value) for name, value in run.coords.items()]
    templated = []
    for key, template in flatten(grid.get("templated_overrides", {})):
        try:
            templated.append((key, str(template).format(**run.coords)))
        except KeyError as e:
            raise ValueError(f"templated override {key}={template!r} names unknown field {e}; "
                             f"fields: {sorted(run.coords)}") from None
    return flatten(grid.get("overrides", {})) + [(k, v) for k, v in coords if k] + templated


def param_count(grid, model: str) -> float | None:
    """N of a model name: grid.param_counts if listed, else the non-embedding parameter count of
    the common.config preset of that name, else None (unknown)."""
    counts = dict(grid.get("param_counts", {}))
    if model in counts:
        return float(counts[model])
    try:
        return float(accounting.non_embedding_params(model_configs.get_preset(model)))
    except KeyError:
        return None


def run_record(grid, run: Run) -> dict:
    """What gather needs of a run (also written to <workdir>/run.json)."""
    return {"run_id": run.run_id, **run.coords, "size": param_count(grid, run.coords["model"]),
            "settings": sorted(run.settings())}
