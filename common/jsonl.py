"""JSON Lines files: one JSON object per line, appended by runs that may be killed mid-write.

The one reader and writer of every such file in the repository: training metrics
(`common.metrics_writer`), PsySafe dialogues (`agent_safety.store`), problem tables
(`rl_scaling.data.loaders`).

Reading:

* a blank line is skipped;
* a line that is not a JSON object raises `ValueError` naming the file and the line, unless it is the
  last line and has no newline after it;
* that unterminated last line is what a killed writer leaves. It is kept when it parses (the kill
  came between the record and its newline). When it does not parse it is a record cut short:
  `torn_tail="skip"` (files that runs append to) drops it with a warning, `torn_tail="raise"` (inputs
  such as data sets, which nothing appends to) raises like any other bad line.

Writing: one `json.dumps(record, ensure_ascii=False)` and a newline per record. Before appending to
a file a killed run may have left, `repair_tail` makes it end on a complete line, so the next
record starts a line of its own.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping

log = logging.getLogger(__name__)

TORN_TAIL = ("skip", "raise")


def dumps_line(record: Mapping) -> str:
    """One record as one line, newline included."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def _parse(line: str, path: Path, number: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}:{number}: a JSON {type(record).__name__}, not an object")
    return record


def iter_jsonl(path: str | os.PathLike, *, torn_tail: str = "skip") -> Iterator[tuple[int, dict]]:
    """(line number, record) of every record of `path`, in file order (see the module docstring)."""
    if torn_tail not in TORN_TAIL:
        raise ValueError(f"torn_tail must be one of {TORN_TAIL}, got {torn_tail!r}")
    path = Path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    tail = lines.pop()  # "" when the file ends in a newline
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, _parse(line, path, number)
    if not tail.strip():
        return
    number = len(lines) + 1
    try:
        record = _parse(tail, path, number)
    except ValueError:
        if torn_tail == "raise":
            raise
        log.warning("%s: skipping line %d, a record cut short (%d characters, no newline)", path, number, len(tail))
        return
    yield number, record


def read_jsonl(path: str | os.PathLike, *, torn_tail: str = "skip") -> list[dict]:
    """The records of `path` (see the module docstring); FileNotFoundError when it does not exist."""
    return [record for _, record in iter_jsonl(path, torn_tail=torn_tail)]


def repair_tail(path: str | os.PathLike) -> None:
    """Makes `path` end on a complete line before it is appended to: an unterminated last record that
    parses gets its newline, one cut short is cut off (with a warning). A missing file is left alone."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    if not tail.strip():
        return
    try:
        _parse(tail.decode("utf-8"), path, data.count(b"\n") + 1)
        complete = True
    except (ValueError, UnicodeDecodeError):
        complete = False
    with path.open("r+b") as f:
        if complete:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            log.warning("%s: removing %d bytes of a record cut short", path, len(tail))
            f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def append_jsonl(path: str | os.PathLike, record: Mapping) -> None:
    """Appends one record and forces it to disk (a record written is a record kept)."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(dumps_line(record))
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping]) -> Path:
    """Writes `records` as the whole of `path`, atomically: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(dumps_line(r) for r in records)
    os.replace(tmp, path)
    return path
