"""Loading a script that is not part of a package (tools/*.py, test workers) as a module, for its functions."""

import importlib.util
import sys
from pathlib import Path


def load_module(path: str | Path, name: str):
    """The module of the file at `path`, registered as sys.modules[name] (dataclasses look their module up
    while the file executes); the caller removes it when done if it must not outlive a test.

    While the file executes its folder comes first on sys.path, as when Python runs it as a script, so a
    tool imports a sibling module (`from bench_common import ...`) the same way in both cases."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module
