"""Problem tables (parquet or JSON Lines) in the layouts public math RL data comes in.

    load_table("problems.parquet")                                   # any layout below
    load_table("guru_math.parquet", TableOptions(pass_rate_column="qwen2.5_7b_pass_rate"))

Columns are looked up by name; the first one present wins:
  question    `problem`, `question`, or `prompt`: a string, or verl's chat messages [{"role", "content"}]
              (the last user message, its instruction wrapper stripped or kept: `prompt_wrapper.py`).
              With prompt_wrapper="keep", `prompt` comes first.
  reference   `reward_model` (verl: its `ground_truth`), `answer` (raw or clean: `#### 72`, a boxed
              solution, a number, a one-element list), `solution` (Hugging Face MATH style: its last
              balanced `\\boxed{}`).
  difficulty  higher = harder; from `difficulty_source` (a column or a key of verl's `extra_info`).
  source      `data_source` (verl), else the file's stem.
  id          `id`, else `<stem>/<row>`; ids must be unique.
Struct and list fields may also arrive as their JSON or Python string forms (`fields.nested`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.jsonl import read_jsonl
from rl_scaling.data.fields import chat_messages, is_missing, nested, struct_keys, user_message
from rl_scaling.data.problem import Problem
from rl_scaling.data.prompt_wrapper import answer_request_left, apply_wrapper_choice
from rl_scaling.rewards.boxed import last_boxed
from rl_scaling.rewards.references import clean_reference

QUESTION_COLUMNS = ("problem", "question", "prompt")
REFERENCE_COLUMNS = ("reward_model", "answer", "solution")
STRUCT_COLUMNS = ("reward_model", "extra_info")  # parsed once per row when they arrive as strings
EXTRA_INFO = "extra_info"
_LEVEL = re.compile(r"^\s*level\s*([-+]?\d+(?:\.\d+)?)\s*$", re.IGNORECASE)  # MATH's "Level 3"


@dataclasses.dataclass(frozen=True)
class TableOptions:
    """How to read a table; each is a `data.*` config key of the GRPO trainer of the same name.

    prompt_wrapper: "strip" (default: the problem inside the prompt's instructions, so that
      `data.template` adds the study's) or "keep" (the user message verbatim; pair with template "plain").
    pass_rate_column: a column or `extra_info` key holding a pass rate in [0, 1] (e.g.
      "qwen2.5_7b_pass_rate"); difficulty = 1 - pass rate.
    difficulty_column: a column or `extra_info` key holding a difficulty (higher = harder).
    Both empty: `difficulty`, else `pass_rate`, else the table's one `<model>_pass_rate` (several: an error).
    """

    prompt_wrapper: str = "strip"
    pass_rate_column: str = ""
    difficulty_column: str = ""


@dataclasses.dataclass(frozen=True)
class DifficultySource:
    """Where a table's difficulties come from: `name` in the row itself or in its `extra_info`."""

    name: str
    in_extra_info: bool
    is_pass_rate: bool

    def describe(self) -> str:
        where = f"{EXTRA_INFO}.{self.name}" if self.in_extra_info else self.name
        return f"1 - {where}" if self.is_pass_rate else where


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows as dicts, column names) of a .parquet or .jsonl file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.to_pylist(), list(table.column_names)
    if path.suffix == ".jsonl":
        rows = read_jsonl(path, torn_tail="raise")
        return rows, sorted({key for row in rows for key in row})
    raise ValueError(f"unsupported data file type {path.suffix!r} ({path}); use .parquet or .jsonl")


def difficulty_source(columns: Sequence[str], extra_keys: Sequence[str], options: TableOptions,
                      path: Path) -> DifficultySource | None:
    """The table's difficulty field as `TableOptions` says, or found by name; None when it has none.

    Raises ValueError when both options are set, when a named field is in neither the columns nor
    `extra_info`, or when no name is given and the table holds several `<model>_pass_rate` fields.
    """
    if options.pass_rate_column and options.difficulty_column:
        raise ValueError("set data.pass_rate_column or data.difficulty_column, not both "
                         f"({options.pass_rate_column!r}, {options.difficulty_column!r})")

    def find(name: str, is_pass_rate: bool) -> DifficultySource | None:
        if name in columns or name in extra_keys:
            return DifficultySource(name, name not in columns, is_pass_rate)
        return None

    named = options.pass_rate_column or options.difficulty_column
    if named:
        found = find(named, bool(options.pass_rate_column))
        if found is None:
            key = "pass_rate_column" if options.pass_rate_column else "difficulty_column"
            raise ValueError(f"{path} has no field {named!r} (data.{key}); columns found: {list(columns)}; "
                             f"{EXTRA_INFO} keys found: {list(extra_keys)}")
        return found
    for name, is_pass_rate in (("difficulty", False), ("pass_rate", True)):
        if (found := find(name, is_pass_rate)) is not None:
            return found
    rates = [k for k in [*columns, *extra_keys] if k.endswith("_pass_rate")]
    if len(rates) > 1:
        raise ValueError(f"{path} holds {len(rates)} pass rates {rates}: choose the difficulty source with "
                         "data.pass_rate_column (difficulty = 1 - pass rate)")
    return find(rates[0], True) if rates else None


def _number(value: Any, where: str) -> float:
    if isinstance(value, str) and (match := _LEVEL.match(value)):
        return float(match.group(1))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: difficulty field is not a number: {value!r}") from None


def row_difficulty(row: Mapping[str, Any], source: DifficultySource | None, where: str) -> float | None:
    """Difficulty of one row (None when the table has no source or this row has no value)."""
    if source is None:
        return None
    holder = row.get(EXTRA_INFO) if source.in_extra_info else row
    value = holder.get(source.name) if isinstance(holder, Mapping) else None
    if is_missing(value):
        return None
    number = _number(value, where)
    if not source.is_pass_rate:
        return number
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{where}: {source.name} must be in [0, 1], got {number}")
    return 1.0 - number


def row_reference(row: Mapping[str, Any], column: str, where: str) -> str:
    """The clean reference of one row from its `column` (one of REFERENCE_COLUMNS)."""
    value = _present(row, column, where)
    if column == "reward_model":
        if not isinstance(value, Mapping) or is_missing(value.get("ground_truth")):
            raise ValueError(f"{where}: reward_model has no ground_truth; got {str(value)[:120]!r}")
        value = value["ground_truth"]
    elif column == "solution" and last_boxed(str(value)) is None:
        raise ValueError(f"{where}: solution has no \\boxed{{}} answer: ...{str(value)[-120:]!r}")
    reference = clean_reference(value)
    if not reference:
        raise ValueError(f"{where}: empty reference in column {column!r}")
    return reference


def row_question(row: Mapping[str, Any], column: str, wrapper: str, where: str) -> tuple[str, int]:
    """(question text, messages left out: system messages beside the user's) of one row."""
    value = _present(row, column, where)
    if column != "prompt":
        return str(value), 0
    messages = None
    if isinstance(value, (list, tuple)):
        messages = chat_messages(value, where)
    elif isinstance(value, str) and value.lstrip().startswith("["):
        try:
            messages = chat_messages(value, where)
        except ValueError:
            pass  # a plain-text prompt that happens to start with "["
    text, others = user_message(messages, where) if messages is not None else (str(value), 0)
    return apply_wrapper_choice(text, wrapper), others


def load_table(path: str | os.PathLike, options: TableOptions | None = None) -> list[Problem]:
    """Problems of a parquet or JSON Lines table in any layout of the module docstring, in file order.

    Raises FileNotFoundError, ValueError (an unsupported file type; a table without a question or a
    reference column, naming the columns found and the ones it needs; a row that cannot be read, named;
    repeated ids). Warns when system messages are left out or a `\\boxed{}` request survives stripping.
    """
    options = options or TableOptions()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file {path}")
    rows, columns = read_rows(path)
    for index, row in enumerate(rows):
        for column in STRUCT_COLUMNS:
            if column in row and not is_missing(row[column]):
                row[column] = nested(row[column], f"{path} row {index} column {column!r}")
    question_col, reference_col = _table_columns(columns, options.prompt_wrapper, path)
    difficulty = difficulty_source(columns, struct_keys(rows, EXTRA_INFO), options, path)
    problems, left_out, requests = [], 0, []
    for index, row in enumerate(rows):
        where = f"{path} row {index}"
        question, others = row_question(row, question_col, options.prompt_wrapper, where)
        left_out += others
        if question_col == "prompt" and options.prompt_wrapper == "strip" and answer_request_left(question):
            requests.append(index)
        source = row.get("data_source")
        problems.append(Problem(
            id=str(row["id"]) if not is_missing(row.get("id")) else f"{path.stem}/{index}",
            question=question,
            reference=row_reference(row, reference_col, where),
            difficulty=row_difficulty(row, difficulty, where),
            source=str(source) if not is_missing(source) else path.stem,
        ))
    _check_unique_ids(problems, path)
    _warn_about_prompts(path, len(rows), left_out, requests)
    return problems


def _table_columns(columns: Sequence[str], wrapper: str, path: Path) -> tuple[str, str]:
    order = ("prompt", "problem", "question") if wrapper == "keep" else QUESTION_COLUMNS
    question = next((c for c in order if c in columns), None)
    reference = next((c for c in REFERENCE_COLUMNS if c in columns), None)
    if question is None or reference is None:
        raise ValueError(
            f"{path} is not a problem table: it needs a question column ('problem', 'question' or 'prompt' "
            "as text or chat messages) and a reference column ('reward_model' with a 'ground_truth', "
            f"'answer', or 'solution' with a \\boxed{{}} answer); columns found: {list(columns)}"
        )
    return question, reference


def _present(row: Mapping[str, Any], key: str, where: str) -> Any:
    if is_missing(row.get(key)):
        raise ValueError(f"{where} has no {key!r} value; fields found: {sorted(row)}")
    return row[key]


def _check_unique_ids(problems: Sequence[Problem], path: Path) -> None:
    repeated = [i for i, n in collections.Counter(p.id for p in problems).items() if n > 1]
    if repeated:
        raise ValueError(f"{path}: ids must be unique (the trainer keys prompts by id); "
                         f"{len(repeated)} repeat, e.g. {repeated[:3]}")


def _warn_about_prompts(path: Path, num_rows: int, left_out: int, requests: list[int]) -> None:
    if left_out:
        warnings.warn(f"{path}: {left_out} prompt message(s) other than the user's (e.g. a system message) "
                      "are left out; data.template gives the prompt's system text", stacklevel=3)
    if requests:
        warnings.warn(f"{path}: {len(requests)} of {num_rows} prompts still ask for \\boxed{{}} after stripping "
                      f"the instruction wrapper (e.g. row {requests[0]}), so data.template adds a second request; "
                      "set data.prompt_wrapper='keep' with data.template='plain' to use the prompts as they are",
                      stacklevel=3)
