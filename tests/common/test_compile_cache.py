"""The persistent compilation cache of the command-line entry points: on by default, off by environment."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, jax, jax.numpy as jnp
from common.compile_cache import enable_compilation_cache
path = enable_compilation_cache()
print("DIR", path)
events = []
jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
if path is not None:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache even this small program
    print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum()))
print("HITS", sum(e == "/jax/compilation_cache/cache_hits" for e in events))
"""


def _run(env_value: str) -> str:
    env = {**os.environ, "QRR_COMPILATION_CACHE": env_value, "XLA_FLAGS": "", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _hits(stdout: str) -> int:
    return int(re.search(r"^HITS (\d+)$", stdout, re.M).group(1))


def test_compiled_programs_land_in_the_configured_directory(tmp_path):
    cache = tmp_path / "jax_cache"
    first = _run(str(cache))
    assert f"DIR {cache}" in first and _hits(first) == 0
    assert list(cache.iterdir()), "nothing was written to the compilation cache"
    assert _hits(_run(str(cache))) >= 1  # a new process: the programs are read back, not compiled


def test_off_turns_it_off(tmp_path):
    assert "DIR None" in _run("off")


def test_the_test_suite_runs_without_it():
    assert os.environ["QRR_COMPILATION_CACHE"] == "off"
