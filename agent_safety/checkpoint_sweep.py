"""The cross-paper question: one PsySafe grid over a list of checkpoints (e.g. the steps of a GRPO run), and a
table and plot of PDR and questionnaire score against training step (the command:
`python tools/psysafe_checkpoints.py`).

Checkpoints are named as paths, or found under a run directory: every `common` checkpoint there (a directory
with `metadata.json` and `params/`, the layout `common.checkpoint.orbax_io` writes and `rl_scaling` saves its
steps in), its step read from its metadata. A base model (a path or a known name such as
"smollm2-135m-instruct", which has no step) may join as step 0. Paths are made absolute once, here.

Each checkpoint gets its own workdir OUT/step_XXXXXXXX/ (dialogues.jsonl, report.md, plots/: a PsySafe run
of its own, resumable), the agents' model replaced by the checkpoint and everything else as configured. The
judge is the configured one: with judge_backend.kind "same" each checkpoint judges itself, so point the judge
at one fixed model (a path, a name or an endpoint) when comparing checkpoints. OUT/table.md, OUT/table.csv
and OUT/by_step.png gather the steps.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Callable, Sequence

from agent_safety.backends import ChatBackend, make_backend
from agent_safety.report import RESULTS_FILE
from agent_safety.run import RunSummary, run_experiment
from agent_safety.run_identity import dialogue_settings, fingerprint
from agent_safety.store import current_records, read_records
from agent_safety.tables import markdown_table, summary_rows

log = logging.getLogger(__name__)
TABLE_MD, TABLE_CSV, PLOT = "table.md", "table.csv", "by_step.png"
# Directories of saves that never finished (common's `.partial`, orbax's temporary name) are not checkpoints.
UNFINISHED_MARKERS = (".partial", ".orbax-checkpoint-tmp")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """step: training step (0 for a base model); path: absolute path, or a known model name; label: as named
    to the command (for tables)."""

    step: int
    path: str
    label: str


class LazyBackend(ChatBackend):
    """A backend built at its first request: a rerun whose dialogues are all stored loads no model."""

    def __init__(self, build: Callable[[], ChatBackend]):
        self._build, self._backend = build, None

    @property
    def backend(self) -> ChatBackend:
        if self._backend is None:
            self._backend = self._build()
        return self._backend

    @property
    def name(self) -> str:
        return self.backend.name

    def complete_batch(self, requests):
        return self.backend.complete_batch(requests)


def checkpoint_step(path: Path) -> int | None:
    """The training step in a `common` checkpoint's metadata.json; None when it has none."""
    from common.checkpoint.orbax_io import read_metadata

    step = read_metadata(path).get("step")
    return None if step is None else int(step)


def find_checkpoints(run_dir: str | Path, max_depth: int = 3) -> list[Path]:
    """Every `common` checkpoint directory under `run_dir` (itself included, at most `max_depth` levels
    down, never inside a checkpoint), unfinished saves left out; sorted by path."""
    from common.checkpoint.orbax_io import is_checkpoint_dir

    found, frontier = [], [Path(run_dir)]
    for _ in range(max_depth + 1):
        children = []
        for path in frontier:
            if any(marker in path.name for marker in UNFINISHED_MARKERS):
                continue
            if is_checkpoint_dir(path):
                found.append(path)
            elif path.is_dir():
                children += [p for p in path.iterdir() if p.is_dir()]
        frontier = children
    return sorted(found)


def run_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The checkpoints of a run directory with their steps (see `find_checkpoints`); an error when none."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no run directory {root}")
    paths = find_checkpoints(root)
    if not paths:
        raise FileNotFoundError(f"no checkpoint under {root} (a checkpoint directory holds metadata.json and "
                                "params/; a GRPO run saves its steps in checkpoints/step_XXXXXXXX/)")
    return [named_checkpoint(str(root / p.relative_to(root))) for p in paths]


def named_checkpoint(path: str) -> Checkpoint:
    """A checkpoint named by path, its step read from its metadata (an error naming it when there is none)."""
    from common.checkpoint.orbax_io import is_checkpoint_dir

    absolute = Path(path).expanduser().absolute()
    if not is_checkpoint_dir(absolute):
        raise FileNotFoundError(f"{path} is not a checkpoint directory (metadata.json and params/); a model "
                                "without training steps (an HF directory, a GGUF file) joins as --base")
    step = checkpoint_step(absolute)
    if step is None:
        raise ValueError(f"checkpoint {path} records no step in its metadata.json; pass it as --base (step 0)")
    return Checkpoint(step, str(absolute), path)


def base_checkpoint(name_or_path: str) -> Checkpoint:
    """The untrained model as step 0: a known model name as it is, a path made absolute."""
    from common.api import KNOWN_MODELS

    if name_or_path.lower() in KNOWN_MODELS:
        return Checkpoint(0, name_or_path, name_or_path)
    absolute = Path(name_or_path).expanduser().absolute()
    if not absolute.exists():
        raise FileNotFoundError(f"no base model at {name_or_path} (nor a known model name: {KNOWN_MODELS})")
    return Checkpoint(0, str(absolute), name_or_path)


def resolve_checkpoints(paths: Sequence[str] = (), run_dir: str | None = None,
                        base: str | None = None) -> list[Checkpoint]:
    """The base model (step 0), the named checkpoints and those under `run_dir`, by step; an error when two
    have the same step or none is given."""
    checkpoints = ([base_checkpoint(base)] if base else []) + [named_checkpoint(p) for p in paths]
    checkpoints += run_checkpoints(run_dir) if run_dir else []
    if not checkpoints:
        raise ValueError("no checkpoint to evaluate: give checkpoint paths, a run directory or a base model")
    by_step: dict[int, list[str]] = {}
    for c in checkpoints:
        by_step.setdefault(c.step, []).append(c.label)
    clashes = {step: labels for step, labels in by_step.items() if len(labels) > 1}
    if clashes:
        raise ValueError(f"several checkpoints at one step: {clashes}")
    return sorted(checkpoints, key=lambda c: c.step)


def checkpoint_config(config, checkpoint: Checkpoint):
    """A copy of the PsySafe config whose agents run `checkpoint` (its other keys unchanged)."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.backend.model_path = checkpoint.path
        if "model_path" in config:  # the demo configs' top-level alias of backend.model_path
            config.model_path = checkpoint.path
    return config


def step_workdir(out: str | Path, checkpoint: Checkpoint) -> Path:
    return Path(out) / f"step_{checkpoint.step:08d}"


def step_rows(config, checkpoint: Checkpoint, workdir: Path) -> list[dict]:
    """The summary rows (tables.summary_rows) of this checkpoint's dialogues, each with its step and label."""
    current = fingerprint(dialogue_settings(config))
    records = [r for r in current_records(read_records(workdir / RESULTS_FILE)) if r.get("fingerprint") == current]
    return [{"step": checkpoint.step, "checkpoint": checkpoint.label, **row} for row in summary_rows(records)]


def evaluate_checkpoints(config, checkpoints: Sequence[Checkpoint], out: str | Path,
                         agents_for: Callable[[object], ChatBackend] | None = None,
                         judge: ChatBackend | None = None, progress: bool = True) -> tuple[list[dict], int]:
    """Runs the config's grid on every checkpoint (OUT/step_XXXXXXXX/, skipping finished dialogues) and
    writes OUT/table.md, table.csv and by_step.png; returns (rows, failed dialogues over all checkpoints).

    agents_for: builds the agents' backend from a checkpoint's config (default `make_backend(config.backend)`;
    tests pass scripted ones). judge: the judge backend for every checkpoint (default: the config's, built
    once; with judge_backend.kind "same" each checkpoint's own agents).
    """
    from agent_safety.plots import plot_by_step

    out = Path(out)
    if agents_for is None and config.backend.kind != "jax":
        raise ValueError(f"the agents' backend is {config.backend.kind!r}: to run checkpoints it must be 'jax' "
                         "(--config.backend.kind=jax); the command sets its model_path to each checkpoint")
    agents_for = agents_for or (lambda cfg: make_backend(cfg.backend))
    if judge is None and config.judge_backend.kind != "same":
        judge = LazyBackend(lambda: make_backend(config.judge_backend))
    rows, failed = [], 0
    for checkpoint in checkpoints:
        cfg = checkpoint_config(config, checkpoint)
        workdir = step_workdir(out, checkpoint)
        workdir.mkdir(parents=True, exist_ok=True)
        log.info("step %d: %s -> %s", checkpoint.step, checkpoint.label, workdir)
        agents = LazyBackend(lambda cfg=cfg: agents_for(cfg))
        summary: RunSummary = run_experiment(cfg, workdir, agents=agents, judge=judge or agents, progress=progress)
        failed += summary.failed
        rows += step_rows(cfg, checkpoint, workdir)
        del agents  # one checkpoint's model in memory at a time
    write_tables(rows, out)
    plot_by_step(rows, out / PLOT)
    return rows, failed


def write_tables(rows: Sequence[dict], out: Path) -> None:
    """OUT/table.md (with a line on what the columns mean) and OUT/table.csv of the rows, by step."""
    columns = list(dict.fromkeys(c for row in rows for c in row))
    intro = ("PsySafe over training steps: one row per checkpoint, system, attack, defence and task kind. PDR: "
             "share of tasks with a dangerous agent message (judged messages only); mean DTDD: Dark Triad "
             "questionnaire total (12-108) over valid answers, invalid DTDD beside it; step 0: the base model, when "
             "one was given. Each step's dialogues and report: step_XXXXXXXX/.\n\n")
    (out / TABLE_MD).write_text(intro + markdown_table(rows, columns), encoding="utf-8")
    with (out / TABLE_CSV).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
