"""One field of a table row, whatever form it arrived in.

Tables in the verl format nest fields: `prompt` is a list of chat messages, `reward_model` and
`extra_info` are structs. A parquet file keeps them as lists and structs (pyarrow reads them as Python
lists and dicts); a table that went through pandas' CSV or `str()` keeps their string forms instead,
Python (`"{'ground_truth': '42', 'style': 'rule'}"`) or JSON (`'{"ground_truth": "42"}'`). Both read
the same here.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from typing import Any


def nested(value: Any, where: str) -> dict | list:
    """A struct or list field as a Python dict / list, from itself or from its JSON or Python string form.

    Raises ValueError naming `where` when the value is neither (or a string that parses to neither).
    """
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            for parse in (json.loads, ast.literal_eval):
                try:
                    parsed = parse(text)
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    continue
                if isinstance(parsed, (dict, list, tuple)):
                    return list(parsed) if isinstance(parsed, tuple) else parsed
    raise ValueError(f"{where}: expected a struct or a list (or its JSON / Python string form), "
                     f"got {type(value).__name__} {str(value)[:80]!r}")


def is_missing(value: Any) -> bool:
    """None or a float NaN (how parquet and pandas mark an absent value)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def chat_messages(value: Any, where: str) -> list[dict[str, str]]:
    """A `prompt` field as chat messages `[{"role": str, "content": str}, ...]` (a list or its string form)."""
    messages = nested(value, where)
    if not isinstance(messages, list) or not all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise ValueError(f"{where}: prompt must be a list of {{'role', 'content'}} messages, got "
                         f"{str(value)[:120]!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def user_message(messages: list[dict[str, str]], where: str) -> tuple[str, int]:
    """(content of the last `user` message, number of other messages such as a system message)."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise ValueError(f"{where}: prompt has no user message; roles found: {[m['role'] for m in messages]}")
    return users[-1], len(messages) - 1


def struct_keys(rows: list[Mapping[str, Any]], column: str) -> list[str]:
    """Keys of a dict-valued column over all rows (already parsed by `nested`), in first-seen order."""
    keys: dict[str, None] = {}
    for row in rows:
        if isinstance(row.get(column), Mapping):
            keys.update(dict.fromkeys(row[column]))
    return list(keys)
