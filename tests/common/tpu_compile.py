"""Compiling for a TPU slice in a test: libtpu must be configured before JAX starts
(common.aot.topology.prepare_libtpu_env), so the compile runs in a clean process that prints `REPORT {json}`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from common.aot.topology import INSTALL_HINT, libtpu_importable
from tests.multiprocess import REPO_ROOT


def run_tpu_compile(argv: list[str], timeout: float = 300) -> dict:
    """`python *argv` on CPU without the test session's fake devices -> its REPORT. Skips without libtpu, except
    under CI (.ci/run installs it: a skip there would hide a broken install)."""
    if not libtpu_importable():
        if os.environ.get("CI"):
            pytest.fail(f"libtpu is not installed; {INSTALL_HINT}")
        pytest.skip(f"libtpu is not installed; {INSTALL_HINT}")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(re.search(r"^REPORT (.*)$", out.stdout, re.M).group(1))
