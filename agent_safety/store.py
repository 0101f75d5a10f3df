"""Results as JSON Lines: one dialogue per line, appended (flush + fsync) as it completes or fails.

A killed run loses only the dialogues in flight. A last line cut off mid-write is dropped — and cut
from the file on open, so the next append starts on a clean line (`common.jsonl`). Records are keyed
by (task_id, system, attack, defence, seed) and the `fingerprint` of the settings that produced them
(`run_identity.py`; None in records from before it). A record with a `failure` (a model request failed
for good) does not finish its key: the next run runs it again and appends the new record after it. A
rerun skips keys that have a complete record; `current_records` gives one record per key, the complete
one if any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from common.jsonl import append_jsonl, read_jsonl, repair_tail

KEY_FIELDS = ("task_id", "system", "attack", "defence", "seed")


def record_key(record: dict) -> tuple:
    """(task_id, system, attack, defence, seed) of a stored record; names the missing field on error."""
    key = record.get("key")
    if not isinstance(key, dict) or any(f not in key for f in KEY_FIELDS):
        raise ValueError(f"record has no complete 'key' with fields {KEY_FIELDS}: {str(record)[:200]}")
    return tuple(key[f] for f in KEY_FIELDS)


def store_key(record: dict) -> tuple:
    """`record_key` plus the record's settings fingerprint (None when it has none)."""
    return (*record_key(record), record.get("fingerprint"))


def stored_settings(records: Sequence[dict]) -> dict:
    """fingerprint -> the settings stored with it, for every fingerprint in `records` (None -> None)."""
    return {r.get("fingerprint"): r.get("settings") for r in records}


def is_failed(record: dict) -> bool:
    """Whether the dialogue of this record failed (a model request failed for good)."""
    return bool(record.get("failure"))


def read_records(path: str | Path) -> list[dict]:
    """All complete records of a results file (missing file -> []); see `common.jsonl.read_jsonl`."""
    path = Path(path)
    return read_jsonl(path) if path.exists() else []


def current_records(records: Sequence[dict]) -> list[dict]:
    """One record per key, in the order keys first appear: the complete record if there is one, else
    the latest failed attempt (earlier failed attempts of a key are history)."""
    chosen: dict[tuple, dict] = {}
    for r in records:
        key = store_key(r)
        if key not in chosen or is_failed(chosen[key]):
            chosen[key] = r
    return list(chosen.values())


class DialogueStore:
    """Append-only JSONL file of finished (complete or failed) dialogues."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self.finished_keys = {store_key(r) for r in read_records(self.path) if not is_failed(r)}

    def is_finished(self, key: dict, fingerprint: str | None = None) -> bool:
        """Whether a complete dialogue with this key dict (task_id, system, attack, defence, seed) and
        settings fingerprint is stored."""
        return store_key({"key": key, "fingerprint": fingerprint}) in self.finished_keys

    def append(self, record: dict) -> None:
        """Writes one record as one line and forces it to disk; a key already complete raises."""
        key = store_key(record)
        if key in self.finished_keys:
            raise ValueError(f"dialogue {key} is already stored in {self.path}")
        append_jsonl(self.path, record)
        if not is_failed(record):
            self.finished_keys.add(key)

    def records(self) -> list[dict]:
        return read_records(self.path)
