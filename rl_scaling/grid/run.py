"""Running a grid: every unfinished run as a local subprocess, one after another, or their commands for
remote hardware. A run is finished when its workdir holds DONE (the trainer writes it last); a killed or
crashed runner resumes by running again."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys

import tqdm

from rl_scaling.grid.expand import Run, expand_grid, run_record, trainer_overrides

# The training command (tools/train_grpo.py of this checkout).
TRAIN_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "tools" / "train_grpo.py"
DEFAULT_COMMAND = ("{python}", "{train_script}", "--config={base_config}", "{overrides}", "--workdir={workdir}")
DONE_FILE, RUN_FILE, LOG_FILE = "DONE", "run.json", "train.log"


def build_command(grid, run: Run, root) -> list[str]:
    """The argv of one run from the grid's command template.

    Template fields: {python}, {train_script}, {base_config}, {workdir}, {run_id}, {root} and every coordinate;
    the element "{overrides}" expands to one "--config.<key>=<value>" per trainer override.
    """
    fields = {"python": sys.executable, "train_script": str(TRAIN_SCRIPT), "base_config": grid.base_config,
              "workdir": str(run.workdir(root)), "run_id": run.run_id, "root": str(root),
              **run.coords}
    argv = []
    for part in grid.get("command", DEFAULT_COMMAND):
        if part == "{overrides}":
            argv.extend(f"--config.{k}={v}" for k, v in trainer_overrides(grid, run))
        else:
            try:
                argv.append(part.format(**fields))
            except KeyError as e:
                raise ValueError(f"command template {part!r} names unknown field {e}; "
                                 f"fields: {sorted(fields)}") from None
    return argv


def is_finished(run: Run, root) -> bool:
    return (run.workdir(root) / DONE_FILE).exists()


def _write_run_file(grid, run: Run, root) -> None:
    workdir = run.workdir(root)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RUN_FILE).write_text(json.dumps(run_record(grid, run), indent=1) + "\n")


def _run_one(argv: list[str], log_path: pathlib.Path) -> int:
    """Run argv with output appended to log_path; the child is stopped if we are interrupted."""
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            return child.wait()
        except BaseException:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            raise


def run_grid(grid, root, only: str | None = None, stop_on_failure: bool = False) -> dict:
    """Run every unfinished run one after another as a local subprocess.

    Args:
      only: regular expression; run only run ids it matches (re.search).
      stop_on_failure: stop at the first run whose command exits non-zero.
    Returns:
      {"ran": [...], "skipped": [...finished before...], "failed": {run_id: exit code}}.
    """
    root = pathlib.Path(root)
    runs = [r for r in expand_grid(grid) if only is None or re.search(only, r.run_id)]
    summary = {"ran": [], "skipped": [], "failed": {}}
    for run in tqdm.tqdm(runs, desc=grid.get("name", "grid"), unit="run"):
        if is_finished(run, root):
            summary["skipped"].append(run.run_id)
            continue
        _write_run_file(grid, run, root)
        code = _run_one(build_command(grid, run, root), run.workdir(root) / LOG_FILE)
        if code == 0 and not is_finished(run, root):
            code = -1   # the trainer exited cleanly without writing DONE
        if code != 0:
            summary["failed"][run.run_id] = code
            tqdm.tqdm.write(f"run {run.run_id} failed (exit {code}); log: "
                            f"{run.workdir(root) / LOG_FILE}")
            if stop_on_failure:
                break
        else:
            summary["ran"].append(run.run_id)
    return summary


def pending_commands(grid, root, only: str | None = None) -> list[str]:
    """Shell-quoted commands of the unfinished runs (for remote hardware)."""
    return [shlex.join(build_command(grid, run, root)) for run in expand_grid(grid)
            if (only is None or re.search(only, run.run_id)) and not is_finished(run, root)]
