"""Results as JSON Lines: one finished dialogue per line, appended (flush + fsync) as it completes.

A killed run loses only the dialogues in flight. A last line cut off mid-write is dropped — and cut
from the file on open, so the next append starts on a clean line. Records are keyed by
(task_id, system, attack, defence, seed); a rerun skips keys already present.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

KEY_FIELDS = ("task_id", "system", "attack", "defence", "seed")


def record_key(record: dict) -> tuple:
    """(task_id, system, attack, defence, seed) of a stored record; names the missing field on error."""
    key = record.get("key")
    if not isinstance(key, dict) or any(f not in key for f in KEY_FIELDS):
        raise ValueError(f"record has no complete 'key' with fields {KEY_FIELDS}: {str(record)[:200]}")
    return tuple(key[f] for f in KEY_FIELDS)


def read_records(path: str | Path) -> list[dict]:
    """All complete records of a JSONL file (missing file -> []). A last line without a final newline
    is a write cut short and is skipped; a bad line anywhere else raises with its number."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[-1]:
        log.warning("%s: dropping the unfinished last line %d (%d chars)", path, len(lines), len(lines[-1]))
    records = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not valid JSON ({error})") from error
    return records


class DialogueStore:
    """Append-only JSONL file of finished dialogues."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_tail()
        self.finished_keys = {record_key(r) for r in read_records(self.path)}

    def _drop_partial_tail(self) -> None:
        """Cuts the file back to its last newline (a record killed mid-write has none after it)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            log.warning("%s: removing %d bytes of a record cut short", self.path, len(data) - keep)
            with self.path.open("r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())

    def is_finished(self, key: dict) -> bool:
        """Whether a dialogue with this key dict (task_id, system, attack, defence, seed) is stored."""
        return record_key({"key": key}) in self.finished_keys

    def append(self, record: dict) -> None:
        """Writes one record as one line and forces it to disk; a key already stored raises."""
        key = record_key(record)
        if key in self.finished_keys:
            raise ValueError(f"dialogue {key} is already stored in {self.path}")
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.finished_keys.add(key)

    def records(self) -> list[dict]:
        return read_records(self.path)
