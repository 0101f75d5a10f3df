"""Grid runner: expansion, run ids, commands, resumption after a crash or a kill, gather."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from rl_scaling import grid as grid_lib

REPO = pathlib.Path(grid_lib.__file__).resolve().parents[1]

# A stand-in for rl_scaling.train: logs its invocation, writes metrics.jsonl (C and D on training
# lines, eval/L on evaluation lines of the same step) and DONE. FAKE_CRASH_ON=<run id> makes it
# exit 3 half-way; FAKE_HANG_ON=<run id> makes it write its pid to <workdir>/started and sleep.
FAKE_TRAINER = r'''
import json, os, pathlib, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
workdir = pathlib.Path(args["workdir"])
run_id = workdir.name
with open(args["log"], "a") as f:
    f.write(run_id + "\n")
seed, scale = int(args["config.seed"]), float(args["config.train.scale"])
with open(workdir / "metrics.jsonl", "w") as f:
    for step in range(4):
        f.write(json.dumps({"step": step, "C": scale * step, "D": 8 * step}) + "\n")
        f.write(json.dumps({"step": step, "eval/L": 1 / (step + 2) + seed / 100}) + "\n")
        f.flush()
        if step == 1 and os.environ.get("FAKE_CRASH_ON") == run_id:
            sys.exit(3)
        if step == 1 and os.environ.get("FAKE_HANG_ON") == run_id:
            (workdir / "started").write_text(str(os.getpid()))
            time.sleep(60)
(workdir / "DONE").write_text("")
'''


@pytest.fixture
def setup(tmp_path):
    """(grid, root, invocation-log path) with a fake trainer as the command."""
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    grid = ml_collections.ConfigDict({
        "name": "test", "base_config": "configs/none.py",
        "sizes": ("tiny_a", "tiny_b"), "param_counts": {"tiny_a": 1e5, "tiny_b": 2e6},
        "variants": ("base",), "seeds": (0, 1),
        "settings": {"tau": (1, 4)},
        "overrides": {"train": {"scale": 1000}},
        "override_keys": {"model": "model.name", "variant": "", "tau": "data.reuse"},
        "templated_overrides": {"model": {"path": "ckpt/{model}-{variant}"}},
        "command": ("{python}", str(script), "--log={root}/invocations.log", "{overrides}",
                    "--workdir={workdir}"),
    })
    root = tmp_path / "runs"
    return grid, root, root / "invocations.log"


def _invocations(log) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_expansion_and_stable_run_ids(setup):
    grid, root, _ = setup
    runs = grid_lib.expand_grid(grid)
    assert len(runs) == 2 * 2 * 2                        # sizes x tau x seeds
    assert [r.run_id for r in runs[:3]] == [
        "base-tiny_a-tau1-seed0", "base-tiny_a-tau1-seed1", "base-tiny_a-tau4-seed0"]
    assert runs[-1].run_id == "base-tiny_b-tau4-seed1"
    assert [r.run_id for r in grid_lib.expand_grid(grid)] == [r.run_id for r in runs]
    assert runs[0].workdir(root) == root / "base-tiny_a-tau1-seed0"
    # "-" separates the fields, so values keep only letters, digits, "_" and ".".
    assert grid_lib.run_id_of({"model": "Qwen/2.5 0.5B", "variant": "base", "seed": 0,
                               "lr": 1e-6}) == "base-Qwen_2.5_0.5B-lr1e_06-seed0"


def test_command_template(setup):
    grid, root, _ = setup
    argv = grid_lib.build_command(grid, grid_lib.expand_grid(grid)[2], root)
    assert argv[0] == sys.executable
    assert argv[2:] == [f"--log={root}/invocations.log", "--config.train.scale=1000",
                        "--config.model.name=tiny_a", "--config.data.reuse=4", "--config.seed=0",
                        "--config.model.path=ckpt/tiny_a-base",
                        f"--workdir={root}/base-tiny_a-tau4-seed0"]
    default = ml_collections.ConfigDict({**grid.to_dict(), "command": grid_lib.DEFAULT_COMMAND})
    argv = grid_lib.build_command(default, grid_lib.expand_grid(grid)[0], root)
    assert argv[1:4] == ["-m", "rl_scaling.train", "--config=configs/none.py"]
    bad = ml_collections.ConfigDict({**grid.to_dict(), "command": ("{pyhton}",)})
    with pytest.raises(ValueError, match="unknown field 'pyhton'"):
        grid_lib.build_command(bad, grid_lib.expand_grid(grid)[0], root)
    bad = ml_collections.ConfigDict({**grid.to_dict(), "templated_overrides": {"x": "{G}"}})
    with pytest.raises(ValueError, match="templated override x='{G}' names unknown field 'G'"):
        grid_lib.build_command(bad, grid_lib.expand_grid(grid)[0], root)


def test_crash_then_resume_runs_only_unfinished(setup, monkeypatch):
    grid, root, log = setup
    crashed = "base-tiny_b-tau1-seed0"
    monkeypatch.setenv("FAKE_CRASH_ON", crashed)
    summary = grid_lib.run_grid(grid, root)
    assert summary["failed"] == {crashed: 3}
    assert len(summary["ran"]) == 7 and summary["skipped"] == []
    assert not (root / crashed / "DONE").exists()
    assert "--config.seed=0" in (root / crashed / "train.log").read_text()
    monkeypatch.delenv("FAKE_CRASH_ON")
    summary = grid_lib.run_grid(grid, root)
    assert summary["ran"] == [crashed] and len(summary["skipped"]) == 7
    counts = {run_id: _invocations(log).count(run_id) for run_id in set(_invocations(log))}
    assert counts.pop(crashed) == 2 and set(counts.values()) == {1} and len(counts) == 7
    assert grid_lib.pending_commands(grid, root) == []


def test_killed_runner_resumes_without_rerunning(setup, tmp_path):
    grid, root, log = setup
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(f"import ml_collections\ndef get_config():\n"
                         f"    return ml_collections.ConfigDict({grid.to_dict()!r})\n")
    hang = "base-tiny_a-tau4-seed0"                       # the third run
    env = {**os.environ, "FAKE_HANG_ON": hang}
    cli = [sys.executable, "-m", "rl_scaling.grid", "run", "--grid", str(grid_file),
           "--root", str(root)]
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

    pending = grid_lib.pending_commands(grid, root)
    assert len(pending) == 6 and f"--workdir={root}/{hang}" in pending[0]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ran 6, skipped 2 finished, failed 0" in done.stdout
    calls = _invocations(log)
    assert calls.count("base-tiny_a-tau1-seed0") == 1 and calls.count(hang) == 2
    assert len(calls) == 3 + 6


def test_print_lists_pending_commands(setup, capsys, tmp_path):
    grid, root, _ = setup
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(f"import ml_collections\ndef get_config():\n"
                         f"    return ml_collections.ConfigDict({grid.to_dict()!r})\n")
    assert grid_lib.main(["run", "--grid", str(grid_file), "--root", str(root), "--print",
                          "--only", "tiny_b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all("--config.model.name=tiny_b" in line for line in lines)
    assert not root.exists()                               # printing runs nothing


def test_gather_builds_the_table(setup, tmp_path):
    grid, root, _ = setup
    grid_lib.run_grid(grid, root)
    table = grid_lib.gather(root, grid)
    assert list(table)[:9] == ["variant", "size", "seed", "step", "C", "D", "L", "model",
                               "run_id"]
    assert "tau" in table and len(table["L"]) == 8 * 4
    row = (table["run_id"] == "base-tiny_b-tau4-seed1") & (table["step"] == 3)
    assert row.sum() == 1
    assert table["size"][row][0] == 2e6 and table["tau"][row][0] == 4
    assert table["C"][row][0] == 3000.0 and table["D"][row][0] == 24.0
    assert table["L"][row][0] == pytest.approx(1 / 5 + 0.01)
    # Without the grid, from the run.json files the runner wrote: the same table.
    again = grid_lib.gather(root)
    order = np.lexsort((table["step"], table["run_id"].astype(str)))
    order_again = np.lexsort((again["step"], again["run_id"].astype(str)))
    for name in table:
        assert list(table[name][order]) == list(again[name][order_again]), name
    assert grid_lib.main(["gather", "--root", str(root), "--out", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().startswith("variant,size,seed,step,C,D,L,model")


def test_gather_skips_unfinished_and_names_bad_metrics(setup, monkeypatch):
    grid, root, _ = setup
    monkeypatch.setenv("FAKE_CRASH_ON", "base-tiny_a-tau1-seed0")
    grid_lib.run_grid(grid, root)
    assert len(grid_lib.gather(root, grid)["L"]) == 7 * 4
    assert len(grid_lib.gather(root, grid, include_unfinished=True)["L"]) == 7 * 4 + 2
    bad = root / "base-tiny_a-tau1-seed1" / "metrics.jsonl"
    bad.write_text('{"step": 1, "eval/L": 0.5, "C": 1.0}\n')
    with pytest.raises(ValueError, match=r"step 1 has 'eval/L' but no 'D' \(column D\)"):
        grid_lib.gather(root, grid)
    bad.write_text('{"step": 1, "eval/L": 0.5\n')
    with pytest.raises(ValueError, match="metrics.jsonl:1: not valid JSON"):
        grid_lib.gather(root, grid)


def test_bad_grids(setup, tmp_path):
    grid, root, _ = setup
    path = tmp_path / "g.py"
    path.write_text("import ml_collections\ndef get_config():\n"
                    "    return ml_collections.ConfigDict({'sizes': ('a',)})\n")
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['base_config', 'variants', 'seeds'\]"):
        grid_lib.load_grid_config(path)
    with pytest.raises(FileNotFoundError, match="no config file at"):
        grid_lib.load_grid_config(tmp_path / "missing.py")
    clash = ml_collections.ConfigDict({**grid.to_dict(), "settings": {"size": (1, 2)}})
    with pytest.raises(ValueError, match="setting 'size' clashes"):
        grid_lib.expand_grid(clash)
    unknown = ml_collections.ConfigDict({**grid.to_dict(), "param_counts": {}, "sizes": ("x",)})
    grid_lib.run_grid(unknown, root)
    with pytest.raises(ValueError, match="no parameter count for model 'x'"):
        grid_lib.gather(root, unknown)
    (root / "base-x-tau1-seed0" / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match="base-x-tau1-seed0 is finished but has no"):
        grid_lib.gather(root, unknown)


def test_example_grid_configs_expand():
    family = grid_lib.load_grid_config(REPO / "configs/grids/qwen2_5_family.py")
    runs = grid_lib.expand_grid(family)
    assert len(runs) == 7 * 2 * 3
    assert grid_lib.param_count(family, "qwen2_5_0_5b") == pytest.approx(3.58e8, rel=0.01)
    reuse = grid_lib.expand_grid(grid_lib.load_grid_config(REPO / "configs/grids/data_reuse.py"))
    assert len(reuse) == 3 * 9 * 3 and len({r.run_id for r in reuse}) == len(reuse)
    group = grid_lib.load_grid_config(REPO / "configs/grids/group_size.py")
    assert len(grid_lib.expand_grid(group)) == 3 * 4 * 3


@pytest.mark.slow
def test_real_trainer_through_the_grid(tmp_path):
    """rl_scaling.train on the tiny config (one 1-step run, ~25 s): DONE, metrics, a table."""
    grid = ml_collections.ConfigDict({
        "base_config": str(REPO / "configs/grpo/tiny.py"), "sizes": ("tiny",),
        "variants": ("base",), "seeds": (0,), "overrides": {"num_steps": 1, "eval": {"every": 1}},
        "override_keys": {"model": "model.preset", "variant": ""}})
    root = tmp_path / "runs"
    assert grid_lib.run_grid(grid, root)["ran"] == ["base-tiny-seed0"]
    table = grid_lib.gather(root, grid)
    assert list(table["step"]) == [0, 1]
    assert table["C"][0] == 0 and table["C"][1] > 0 and table["D"][1] > 0
    assert all(0.0 <= v <= 1.0 for v in table["L"])
    assert grid_lib.run_grid(grid, root)["skipped"] == ["base-tiny-seed0"]
