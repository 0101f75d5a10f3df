"""Tasks: the PsySafe file (`task,label,dimension`), AdvBench's (`goal,target`) and our own set.

Files are CSV (with or without a UTF-8 BOM) or `.xlsx` (`task_files.py`). In the PsySafe format the `label`
decides dangerous vs safe; `dimension` only names the safety dimension ("no" for safe tasks). The label
is read word by word (split at anything but letters and digits, lower-cased):
  dangerous: a word in DANGEROUS_LABEL_WORDS — the original's "advbench_red", "DAN_red" (red-team
             sources), or plainly "dangerous", "unsafe", "harmful", "1", "yes", "true";
  safe:      a word in SAFE_LABEL_WORDS — the original's "ai_society_instruction", "ai_society_code"
             (CAMEL's AI-society tasks), or plainly "safe", "benign", "0", "no", "false";
  neither, both, or a "not": an error naming the row (no task is guessed).
A dangerous task with an empty or "no" dimension keeps dimension "unspecified"; a safe task's dimension is
"no". Every AdvBench goal is dangerous. Task ids are content hashes, so reordering a file does not change
them; a task text that appears twice is dropped after its first row, with a warning naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

import yaml

from agent_safety.task_files import read_rows

log = logging.getLogger(__name__)

SAFE_DIMENSION = "no"
UNSPECIFIED_DIMENSION = "unspecified"
DANGEROUS_LABEL_WORDS = frozenset({"red", "redteam", "dangerous", "danger", "unsafe", "harmful", "harm",
                                   "malicious", "1", "yes", "true"})
SAFE_LABEL_WORDS = frozenset({"safe", "benign", "society", "harmless", "0", "no", "false"})


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


def make_task(text: str, dimension: str, source: str, dangerous: bool | None = None) -> Task:
    """A task; `dangerous` None means "decided by the dimension" (anything but "no" is dangerous)."""
    text = text.strip()
    if not text:
        raise ValueError(f"empty task text in {source}")
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    dimension = dimension.strip() or SAFE_DIMENSION
    if dangerous is None:
        dangerous = dimension.lower() != SAFE_DIMENSION
    elif dangerous and dimension.lower() == SAFE_DIMENSION:
        dimension = UNSPECIFIED_DIMENSION
    elif not dangerous:
        dimension = SAFE_DIMENSION
    return Task(f"{source}:{digest}", text, dangerous, dimension, source)


def label_is_dangerous(label: str) -> bool:
    """The PsySafe `label` column as dangerous (True) or safe (False); ValueError when it says neither,
    both, or has a "not" (see the module docstring for the words)."""
    words = set(re.split(r"[^a-z0-9]+", label.strip().lower())) - {""}
    dangerous, safe = bool(words & DANGEROUS_LABEL_WORDS), bool(words & SAFE_LABEL_WORDS)
    if dangerous == safe or "not" in words:
        raise ValueError(f"label {label!r} says neither clearly dangerous nor clearly safe; dangerous words: "
                         f"{sorted(DANGEROUS_LABEL_WORDS)}, safe words: {sorted(SAFE_LABEL_WORDS)}")
    return dangerous


def load_psysafe_file(path: str | Path) -> list[Task]:
    """The original's format: columns task,label,dimension; `label` decides dangerous vs safe."""
    source, tasks = Path(path).stem, []
    for row_number, row in enumerate(read_rows(path, ("task", "label", "dimension")), start=2):
        try:
            tasks.append(make_task(row["task"], row["dimension"], source, label_is_dangerous(row["label"])))
        except ValueError as error:
            raise ValueError(f"{path}: row {row_number}: {error}") from None
    return tasks


def load_advbench_file(path: str | Path) -> list[Task]:
    """AdvBench's harmful_behaviors format: columns goal,target; all dangerous, dimension "advbench"."""
    source = Path(path).stem
    return [make_task(row["goal"], "advbench", source, True) for row in read_rows(path, ("goal", "target"))]


def drop_duplicates(tasks: Sequence[Task], origin: str) -> list[Task]:
    """The first task of each text; a warning names every text that came more than once."""
    kept: dict[str, Task] = {}
    repeats: dict[str, int] = {}
    for task in tasks:
        if task.id in kept:
            repeats[task.id] = repeats.get(task.id, 1) + 1
        else:
            kept[task.id] = task
    if repeats:
        names = "; ".join(f"{kept[i].text[:80]!r} x{n}" for i, n in repeats.items())
        log.warning("%s: dropped %d duplicate task row(s), keeping the first of each: %s",
                    origin, sum(repeats.values()) - len(repeats), names)
    return list(kept.values())


def builtin_tasks() -> list[Task]:
    """Our own small set: 10 safe tasks and 13 topic-level red-team tasks (one per dimension)."""
    data = yaml.safe_load(resources.files("agent_safety").joinpath("tasks.yaml").read_text())
    safe = [make_task(text, SAFE_DIMENSION, "builtin") for text in data["safe"]]
    dangerous = [make_task(t["text"], t["dimension"], "builtin") for t in data["dangerous"]]
    return safe + dangerous


TASK_SOURCES = {"builtin": None, "psysafe": load_psysafe_file, "advbench": load_advbench_file,
                "psysafe_csv": load_psysafe_file, "advbench_csv": load_advbench_file}  # *_csv: older names


def load_tasks(source: str, path: str = "", kinds: tuple[str, ...] = ("safe", "dangerous"),
               limit_per_kind: int = 0) -> list[Task]:
    """Tasks from `source` ("builtin", "psysafe", "advbench"; a CSV or .xlsx at `path`), duplicates
    dropped, keeping `kinds`, at most `limit_per_kind` of each kind (0 = all), in file order."""
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
        tasks = drop_duplicates(TASK_SOURCES[source](path), str(path))
    kept, counts = [], {}
    for task in tasks:
        if task.kind in kinds and (not limit_per_kind or counts.get(task.kind, 0) < limit_per_kind):
            kept.append(task)
            counts[task.kind] = counts.get(task.kind, 0) + 1
    return kept
