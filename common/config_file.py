"""Experiment config files (`configs/**/*.py`) are read by path, never imported as a package.

A config file defines `get_config()` (or `get_config(arg)`, for `--config=FILE:arg` on the command line)
returning an `ml_collections.ConfigDict`. Commands take it through ml_collections' `config_flags`; code
that needs one (the grid runner, the miniature study, the memory plan, tests) calls `load_config`.
Shared defaults live in the library (e.g. `rl_scaling.grpo.defaults`), so config files import the
library and never each other.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def load_config(path: str | os.PathLike, arg: str | None = None):
    """`get_config()` (or `get_config(arg)`) of the config file at `path`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: a config file must define get_config()")
    return module.get_config() if arg is None else module.get_config(arg)
