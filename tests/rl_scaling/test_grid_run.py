"""rl_scaling/grid/run.py and tools/grid.py: commands, resumption after a crash or a kill, the real trainer."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import pytest

from rl_scaling.grid.expand import expand_grid
from rl_scaling.grid.gather import gather
from rl_scaling.grid.run import DEFAULT_COMMAND, TRAIN_SCRIPT, build_command, pending_commands, run_grid
from tests.load_file import load_module

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "grid.py"


def _invocations(log) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _grid_file(grid, tmp_path) -> Path:
    path = tmp_path / "grid.py"
    path.write_text(f"import ml_collections\ndef get_config():\n"
                    f"    return ml_collections.ConfigDict({grid.to_dict()!r})\n")
    return path


def test_command_template(fake_grid):
    grid, root, _ = fake_grid
    argv = build_command(grid, expand_grid(grid)[2], root)
    assert argv[0] == sys.executable
    assert argv[2:] == [f"--log={root}/invocations.log", "--config.train.scale=1000",
                        "--config.model.name=tiny_a", "--config.data.reuse=4", "--config.seed=0",
                        "--config.model.path=ckpt/tiny_a-base",
                        f"--workdir={root}/base-tiny_a-tau4-seed0"]
    default = ml_collections.ConfigDict({**grid.to_dict(), "command": DEFAULT_COMMAND})
    argv = build_command(default, expand_grid(grid)[0], root)
    assert argv[1:3] == [str(TRAIN_SCRIPT), "--config=configs/none.py"] and TRAIN_SCRIPT.is_file()
    bad = ml_collections.ConfigDict({**grid.to_dict(), "command": ("{pyhton}",)})
    with pytest.raises(ValueError, match="unknown field 'pyhton'"):
        build_command(bad, expand_grid(grid)[0], root)
    bad = ml_collections.ConfigDict({**grid.to_dict(), "templated_overrides": {"x": "{G}"}})
    with pytest.raises(ValueError, match="templated override x='{G}' names unknown field 'G'"):
        build_command(bad, expand_grid(grid)[0], root)


def test_crash_then_resume_runs_only_unfinished(fake_grid, monkeypatch):
    grid, root, log = fake_grid
    crashed = "base-tiny_b-tau1-seed0"
    monkeypatch.setenv("FAKE_CRASH_ON", crashed)
    summary = run_grid(grid, root)
    assert summary["failed"] == {crashed: 3}
    assert len(summary["ran"]) == 7 and summary["skipped"] == []
    assert not (root / crashed / "DONE").exists()
    assert "--config.seed=0" in (root / crashed / "train.log").read_text()
    monkeypatch.delenv("FAKE_CRASH_ON")
    summary = run_grid(grid, root)
    assert summary["ran"] == [crashed] and len(summary["skipped"]) == 7
    counts = {run_id: _invocations(log).count(run_id) for run_id in set(_invocations(log))}
    assert counts.pop(crashed) == 2 and set(counts.values()) == {1} and len(counts) == 7
    assert pending_commands(grid, root) == []


def test_killed_runner_resumes_without_rerunning(fake_grid, tmp_path):
    grid, root, log = fake_grid
    grid_file = _grid_file(grid, tmp_path)
    hang = "base-tiny_a-tau4-seed0"                       # the third run
    env = {**os.environ, "FAKE_HANG_ON": hang}
    cli = [sys.executable, str(TOOL), "run", "--grid", str(grid_file), "--root", str(root)]
    runner = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = root / hang / "started"
    deadline = time.time() + 60
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the fake trainer never reached the hanging run"
    trainer_pid = int(started.read_text())
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) != 0
    with pytest.raises(ProcessLookupError):                # the trainer was stopped too
        for _ in range(100):
            os.kill(trainer_pid, 0)
            time.sleep(0.05)
    assert _invocations(log) == ["base-tiny_a-tau1-seed0", "base-tiny_a-tau1-seed1", hang]

    pending = pending_commands(grid, root)
    assert len(pending) == 6 and f"--workdir={root}/{hang}" in pending[0]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ran 6, skipped 2 finished, failed 0" in done.stdout
    calls = _invocations(log)
    assert calls.count("base-tiny_a-tau1-seed0") == 1 and calls.count(hang) == 2
    assert len(calls) == 3 + 6


def test_print_lists_pending_commands(fake_grid, capsys, tmp_path):
    grid, root, _ = fake_grid
    tool = load_module(TOOL, "grid_tool")
    assert tool.main(["run", "--grid", str(_grid_file(grid, tmp_path)), "--root", str(root), "--print",
                      "--only", "tiny_b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all("--config.model.name=tiny_b" in line for line in lines)
    assert not root.exists()                               # printing runs nothing


@pytest.mark.slow
def test_real_trainer_through_the_grid(tmp_path):
    """tools/train_grpo.py on the tiny config (one 1-step run, ~25 s): DONE, metrics, a table."""
    grid = ml_collections.ConfigDict({
        "base_config": str(REPO / "configs/grpo/tiny.py"), "sizes": ("tiny",),
        "variants": ("base",), "seeds": (0,), "overrides": {"num_steps": 1, "eval": {"every": 1}},
        "override_keys": {"model": "model.preset", "variant": ""}})
    root = tmp_path / "runs"
    assert run_grid(grid, root)["ran"] == ["base-tiny-seed0"]
    table = gather(root, grid)
    assert list(table["step"]) == [0, 1]
    assert table["C"][0] == 0 and table["C"][1] > 0 and table["D"][1] > 0
    assert all(0.0 <= v <= 1.0 for v in table["L"])
    assert run_grid(grid, root)["skipped"] == ["base-tiny-seed0"]
