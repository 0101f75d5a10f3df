"""Read math problems from the JSON Lines sets of /work/shared/data/math and from parquet/JSONL tables.

    load_problems("gsm8k", split="train")          # short name, resolved against the data root
    load_problems("/data/dapo.parquet")              # a table: problem|question, answer, [difficulty|pass_rate]

Data root: `$MATH_DATA_DIR`, else `<repo>/../shared/data/math`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.jsonl import read_jsonl
from rl_scaling.data.problem import Problem
from rl_scaling.rewards.references import clean_reference, extract_reference_answer

DATA_ROOT_ENV = "MATH_DATA_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """Where a named set lives under the data root and which record fields hold what."""

    folder: str
    splits: tuple[str, ...]
    question_field: str
    id_field: str | None  # None: the line number is the id


# The files of /work/shared/data/math (see its README.md). The reference field is in
# rl_scaling.rewards.references.REFERENCE_FIELDS, next to the code that cleans it.
DATASETS: dict[str, DatasetLayout] = {
    "gsm8k": DatasetLayout("gsm8k", ("train", "test"), "question", None),
    "aime24": DatasetLayout("aime24", ("test",), "problem", "id"),
    "amc23": DatasetLayout("amc23", ("test",), "problem", "id"),
    "minerva_math": DatasetLayout("minerva_math", ("test",), "problem", "idx"),
}
DATASET_ALIASES = {"minerva": "minerva_math"}

# Column names accepted in generic tables (parquet or JSONL), first match wins.
QUESTION_COLUMNS = ("problem", "question", "prompt")
ANSWER_COLUMNS = ("answer",)


def default_data_root() -> Path:
    """`$MATH_DATA_DIR` if set, else `<repo root>/../shared/data/math`."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else (_REPO_ROOT.parent / "shared" / "data" / "math").resolve()


def load_problems(
    path_or_name: str | os.PathLike,
    split: str = "test",
    data_root: str | os.PathLike | None = None,
) -> list[Problem]:
    """Problems of a named set (`gsm8k`, `aime24`, `amc23`, `minerva_math`) or of a file, in file order.

    Args:
      path_or_name: a short name (resolved as `<data_root>/<folder>/<split>.jsonl`), or a path to a
        `.jsonl` / `.parquet` file. A `.jsonl` inside a folder named like a set is read in that set's
        format; any other file is read as a table (see `load_table`).
      split: for short names, `train` or `test` (only GSM8K has `train`).
      data_root: overrides `default_data_root()`.
    Raises:
      FileNotFoundError: the file does not exist (the path and how to set the data root are named).
      ValueError: unknown split; KeyError: a missing field/column (named, with the ones found).
    """
    text = os.fspath(path_or_name)
    name = DATASET_ALIASES.get(text, text)
    if name in DATASETS:
        layout = DATASETS[name]
        if split not in layout.splits:
            raise ValueError(f"{name} has no split {split!r}; splits: {list(layout.splits)}")
        root = Path(data_root) if data_root is not None else default_data_root()
        path = root / layout.folder / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"{name} split {split!r} not found at {path}; set ${DATA_ROOT_ENV} or data_root to the "
                f"folder holding {sorted(DATASETS)}"
            )
        return load_named_jsonl(path, name, split)
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(
            f"no data file {path} and {text!r} is not a known set name ({sorted(DATASETS)})"
        )
    folder = DATASET_ALIASES.get(path.parent.name, path.parent.name)
    if path.suffix == ".jsonl" and folder in DATASETS:
        return load_named_jsonl(path, folder, path.stem)
    return load_table(path)


def load_named_jsonl(path: Path, dataset: str, split: str) -> list[Problem]:
    """Problems of one file of a named set (format from DATASETS and REFERENCE_FIELDS)."""
    layout = DATASETS[dataset]
    problems = []
    for row, record in enumerate(read_jsonl(path, torn_tail="raise")):
        question = _field(record, layout.question_field, f"{path} line {row + 1}")
        local_id = record[layout.id_field] if layout.id_field in record else row
        problems.append(
            Problem(
                id=f"{dataset}/{split}/{local_id}",
                question=question,
                reference=extract_reference_answer(record, dataset),
                difficulty=None,
                source=dataset,
            )
        )
    return problems


def load_table(path: str | os.PathLike) -> list[Problem]:
    """Problems of a parquet or JSONL table.

    Columns: question in one of QUESTION_COLUMNS, `answer` (raw or clean: `#### 72`, a boxed
    solution and numbers are cleaned), optional `id`, and optional `difficulty` (higher = harder) or
    `pass_rate` (in [0, 1], higher = easier; stored as difficulty = 1 - pass_rate). `difficulty` wins
    when both are present.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        columns = pq.read_schema(path).names
    elif path.suffix == ".jsonl":
        rows = read_jsonl(path, torn_tail="raise")
        columns = sorted({key for row in rows for key in row})
    else:
        raise ValueError(f"unsupported data file type {path.suffix!r} ({path}); use .parquet or .jsonl")
    question_col = _pick_column(columns, QUESTION_COLUMNS, path)
    answer_col = _pick_column(columns, ANSWER_COLUMNS, path)
    problems = []
    for row_index, row in enumerate(rows):
        where = f"{path} row {row_index}"
        problems.append(
            Problem(
                id=str(row["id"]) if row.get("id") is not None else f"{path.stem}/{row_index}",
                question=_field(row, question_col, where),
                reference=clean_reference(_field(row, answer_col, where)),
                difficulty=_difficulty(row, where),
                source=path.stem,
            )
        )
    return problems


def _pick_column(columns: list[str], candidates: tuple[str, ...], path: Path) -> str:
    for name in candidates:
        if name in columns:
            return name
    wanted = " or ".join(repr(c) for c in candidates)
    raise KeyError(f"{path} has no column {wanted}; columns found: {list(columns)}")


def _field(record: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in record or record[key] is None:
        raise KeyError(f"{where} has no {key!r} field; fields found: {sorted(record)}")
    return record[key]


def _difficulty(row: Mapping[str, Any], where: str) -> float | None:
    if row.get("difficulty") is not None:
        return float(row["difficulty"])
    if row.get("pass_rate") is not None:
        rate = float(row["pass_rate"])
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{where}: pass_rate must be in [0, 1], got {rate}")
        return 1.0 - rate
    return None
