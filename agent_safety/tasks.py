"""Tasks: the PsySafe CSV (`task,label,dimension`), AdvBench's CSV (`goal,target`) and our own set.

A task is dangerous unless its dimension is "no" (the PsySafe file's marker for safe tasks); every
AdvBench goal is dangerous. Task ids are content hashes, so reordering a file does not change them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from importlib import resources
from pathlib import Path

import yaml

SAFE_DIMENSION = "no"


@dataclasses.dataclass(frozen=True)
class Task:
    """id: "<source>:<10 hex of sha1(text)>". dimension: safety dimension, "no" for a safe task."""

    id: str
    text: str
    dangerous: bool
    dimension: str
    source: str

    @property
    def kind(self) -> str:
        return "dangerous" if self.dangerous else "safe"


def make_task(text: str, dimension: str, source: str) -> Task:
    text = text.strip()
    if not text:
        raise ValueError(f"empty task text in {source}")
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    dimension = dimension.strip() or SAFE_DIMENSION
    return Task(f"{source}:{digest}", text, dimension.lower() != SAFE_DIMENSION, dimension, source)


def _read_csv(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {columns}, expected {list(required)}")
        rows = [{k.strip(): (v or "") for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise ValueError(f"{path}: no task rows")
    return rows


def load_psysafe_csv(path: str | Path) -> list[Task]:
    """The original's format: columns task,label,dimension; dimension "no" = safe."""
    source = Path(path).stem
    return [make_task(row["task"], row["dimension"], source)
            for row in _read_csv(path, ("task", "label", "dimension"))]


def load_advbench_csv(path: str | Path) -> list[Task]:
    """AdvBench's harmful_behaviors format: columns goal,target; all dangerous, dimension "advbench"."""
    source = Path(path).stem
    return [make_task(row["goal"], "advbench", source) for row in _read_csv(path, ("goal", "target"))]


def builtin_tasks() -> list[Task]:
    """Our own small set: 10 safe tasks and 13 topic-level red-team tasks (one per dimension)."""
    data = yaml.safe_load(resources.files("agent_safety").joinpath("tasks.yaml").read_text())
    safe = [make_task(text, SAFE_DIMENSION, "builtin") for text in data["safe"]]
    dangerous = [make_task(t["text"], t["dimension"], "builtin") for t in data["dangerous"]]
    return safe + dangerous


TASK_SOURCES = {"builtin": None, "psysafe_csv": load_psysafe_csv, "advbench_csv": load_advbench_csv}


def load_tasks(source: str, path: str = "", kinds: tuple[str, ...] = ("safe", "dangerous"),
               limit_per_kind: int = 0) -> list[Task]:
    """Tasks from `source` ("builtin", "psysafe_csv", "advbench_csv"), keeping `kinds`, at most
    `limit_per_kind` of each kind (0 = all), in file order."""
    if source not in TASK_SOURCES:
        raise ValueError(f"unknown task source {source!r}; known: {tuple(TASK_SOURCES)}")
    bad = [k for k in kinds if k not in ("safe", "dangerous")]
    if bad:
        raise ValueError(f"task kinds must be 'safe' or 'dangerous', got {bad}")
    if source == "builtin":
        tasks = builtin_tasks()
    elif not path:
        raise ValueError(f"task source {source!r} needs a path (config key tasks.path)")
    else:
        tasks = TASK_SOURCES[source](path)
    kept, counts = [], {}
    for task in tasks:
        if task.kind in kinds and (not limit_per_kind or counts.get(task.kind, 0) < limit_per_kind):
            kept.append(task)
            counts[task.kind] = counts.get(task.kind, 0) + 1
    return kept
