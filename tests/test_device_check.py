"""tools/device_check.sh: its CPU dry path runs every step at tiny shapes and writes every results file, with
the packages a GPU host lacks (the project's other dependencies) unimportable; its time limits fit the check's
8 minutes; a step that fails or runs out of time still leaves its file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.load_file import load_module

REPO = Path(__file__).resolve().parents[1]
# The project's dependencies the GPU host does not hold (docs: the device tool's package list); a step that
# imports one fails there.
NOT_ON_GPU_HOST = ("ml_collections", "math_verify", "tensorboardX", "gguf", "openai", "fastapi", "uvicorn",
                   "openpyxl", "dashscope", "tbparse", "cpu_kernels")
BLOCKER = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_ON_GPU_HOST!r}:
            raise ImportError(f"{{name}} is not on the GPU host")
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="module")
def check():
    module = load_module(REPO / "tools" / "device_check.py", "device_check")
    yield module
    sys.modules.pop("device_check", None)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(BLOCKER)
    out = tmp_path_factory.mktemp("out")
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(site), OUT=str(out))
    done = subprocess.run(["bash", str(REPO / "tools" / "device_check.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    return done, out


def test_dry_run_writes_every_step(dry_run, check):
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in check.LIMITS:
        r = json.loads((out / f"{name}.json").read_text())
        assert r["status"] == "ok" and r["dry_run"] and r["device"]["platform"] == "cpu", r
    summary = (out / "summary.md").read_text()
    assert all(f"**{name}**: ok" in summary for name in check.LIMITS), summary


def test_dry_run_results_are_what_the_gpu_run_reports(dry_run):
    _, out = dry_run
    parity = json.loads((out / "parity.json").read_text())
    for row in parity["models"].values():  # float32 on the CPU: transformers' logits, the same greedy tokens
        assert row["logits_rel_err"] < 1e-5 and row["greedy_tokens_equal"] == row["greedy_tokens"]
    decode = json.loads((out / "decode.json").read_text())
    assert decode["rows"][0]["ours_tokens_per_s"] > 0 and decode["rows"][0]["transformers_tokens_per_s"] > 0
    assert decode["batch1_hbm_share"] is None  # no datasheet bandwidth for a CPU
    steps = [(row["decode_steps"], row["tokens_equal"]) for row in decode["engine_rows"]]
    assert steps == [(1, True), (4, True)] and all(row["tokens_per_s"] > 0 for row in decode["engine_rows"])
    update = json.loads((out / "update.json").read_text())
    assert update["preset"] == "1xh100" and update["remat"] and update["update_s"] > 0 and update["model_flops"] > 0
    attention = json.loads((out / "attention.json").read_text())
    for row in attention["backends"].values():
        assert row["max_abs_diff_vs_f32"] < 5e-2  # bfloat16 inputs against the float32 reference


def test_limits_fit_eight_minutes(check):
    # a step's limit counts its process's start-up too; the rest is the parent's own start and the summary
    assert sum(check.LIMITS.values()) + 30 <= 8 * 60


def test_a_step_that_fails_or_hangs_leaves_its_file(check, tmp_path, monkeypatch):
    def fake(name, out, dry_run, limit):  # decode stopped at its limit after its first batch
        if name == "decode":
            return {"step": name, "status": "timeout", "limit_s": limit,
                    "rows": [{"batch": 1, "ours_tokens_per_s": 50.0, "transformers_tokens_per_s": 25.0, "ratio": 2.0}]}
        return {"step": name, "status": "failed", "returncode": 1, "stderr_tail": "boom"}

    monkeypatch.setattr(check, "spawn_step", fake)
    check.run_all(tmp_path, ["decode", "update"], dry_run=True)
    assert json.loads((tmp_path / "decode.json").read_text())["status"] == "timeout"
    summary = (tmp_path / "summary.md").read_text()
    assert "**decode**: timeout" in summary and "batch 1: ours 50.0 tok/s" in summary
    assert "**update**: failed" in summary


def test_a_real_timeout_is_reported(check, tmp_path):
    r = check.spawn_step("parity", tmp_path, dry_run=True, limit=0.5)
    assert r["status"] == "timeout" and r["limit_s"] == 0.5
