"""common.api: what its helpers decide without a model."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_facade_does_not_start_jax():
    """`load_for_command` applies the GPU flags after `common.api` is imported: they count only while no backend
    has started."""
    code = "import common.api; from jax._src import xla_bridge as xb; print(xb.backends_are_initialized())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
