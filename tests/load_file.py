"""Loading a script that is not part of a package (tools/*.py, test workers) as a module, for its functions."""

import importlib.util
import sys
from pathlib import Path


def load_module(path: str | Path, name: str):
    """The module of the file at `path`, registered as sys.modules[name] (dataclasses look their module up
    while the file executes); the caller removes it when done if it must not outlive a test."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
