"""Fixtures shared by the rl_scaling tests: a small grid whose runs are a fake trainer."""

import ml_collections
import pytest

# A stand-in for tools/train_grpo.py: logs its invocation, writes metrics.jsonl (C and D on training
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
def fake_grid(tmp_path):
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
