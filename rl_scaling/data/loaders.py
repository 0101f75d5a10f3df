"""Read math problems from the named sets under the data root and from parquet/JSONL tables.

    load_problems("gsm8k", split="train")          # short name, resolved against the data root
    load_problems("math500")                         # <data root>/math500/test.jsonl, if you put it there
    load_problems("/data/dapo.parquet")              # a table in any layout of `rl_scaling.data.tables`

Data root: `$MATH_DATA_DIR`, else `<repo>/../shared/data/math`. The shared root holds gsm8k, aime24,
amc23 and minerva_math; math500, aime25 and olympiadbench load from the same layout once their files are
there (docs/data.md says where each comes from).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.jsonl import read_jsonl
from rl_scaling.data.problem import Problem
from rl_scaling.data.tables import TableOptions, load_table
from rl_scaling.rewards.references import extract_reference_answer

DATA_ROOT_ENV = "MATH_DATA_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """Where a named set lives under the data root and which record fields hold what."""

    folder: str
    splits: tuple[str, ...]
    question_field: str
    id_field: str | None  # None: the line number is the id


# The files of /work/shared/data/math (see its README.md) and the downstream sets a user adds beside them
# in the same layout (docs/data.md). The reference field is in
# rl_scaling.rewards.references.REFERENCE_FIELDS, next to the code that cleans it.
DATASETS: dict[str, DatasetLayout] = {
    "gsm8k": DatasetLayout("gsm8k", ("train", "test"), "question", None),
    "aime24": DatasetLayout("aime24", ("test",), "problem", "id"),
    "amc23": DatasetLayout("amc23", ("test",), "problem", "id"),
    "minerva_math": DatasetLayout("minerva_math", ("test",), "problem", "idx"),
    "math500": DatasetLayout("math500", ("test",), "problem", "unique_id"),
    "aime25": DatasetLayout("aime25", ("test",), "problem", "id"),
    "olympiadbench": DatasetLayout("olympiadbench", ("test",), "question", "id"),
}
DATASET_ALIASES = {"minerva": "minerva_math", "math-500": "math500", "math_500": "math500"}


def default_data_root() -> Path:
    """`$MATH_DATA_DIR` if set, else `<repo root>/../shared/data/math`."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else (_REPO_ROOT.parent / "shared" / "data" / "math").resolve()


def named_set_path(name: str, split: str = "test", data_root: str | os.PathLike | None = None) -> Path:
    """`<data_root>/<folder>/<split>.jsonl` of a named set (ValueError for a split it does not have)."""
    layout = DATASETS[DATASET_ALIASES.get(name, name)]
    if split not in layout.splits:
        raise ValueError(f"{name} has no split {split!r}; splits: {list(layout.splits)}")
    root = Path(data_root) if data_root is not None else default_data_root()
    return root / layout.folder / f"{split}.jsonl"


def problems_file(path_or_name: str | os.PathLike, split: str = "test",
                  data_root: str | os.PathLike | None = None) -> Path:
    """The file `load_problems(path_or_name, split, data_root)` reads, whether or not it exists."""
    text = os.fspath(path_or_name)
    name = DATASET_ALIASES.get(text, text)
    return named_set_path(name, split, data_root) if name in DATASETS else Path(text)


def load_problems(
    path_or_name: str | os.PathLike,
    split: str = "test",
    data_root: str | os.PathLike | None = None,
    options: TableOptions | None = None,
) -> list[Problem]:
    """Problems of a named set (a key of DATASETS, e.g. `gsm8k`, `math500`) or of a file, in file order.

    Args:
      path_or_name: a short name (resolved as `<data_root>/<folder>/<split>.jsonl`), or a path to a
        `.jsonl` / `.parquet` file. A `.jsonl` inside a folder named like a set is read in that set's
        format; any other file is read as a table (see `load_table`).
      split: for short names, `train` or `test` (only GSM8K has `train`).
      data_root: overrides `default_data_root()`.
      options: how a table is read (`TableOptions`); named sets ignore it.
    Raises:
      FileNotFoundError: the file does not exist (the path and how to set the data root are named).
      ValueError: unknown split, an unreadable table (see `load_table`); KeyError: a record of a named
        set without its field (named, with the ones found).
    """
    text = os.fspath(path_or_name)
    name = DATASET_ALIASES.get(text, text)
    if name in DATASETS:
        path = named_set_path(name, split, data_root)
        if not path.is_file():
            raise FileNotFoundError(
                f"{name} split {split!r} not found at {path}; put the file there, or set ${DATA_ROOT_ENV} "
                f"or data_root to the folder holding the named sets {sorted(DATASETS)} (layout: docs/data.md)"
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
    return load_table(path, options)


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


def _field(record: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in record or record[key] is None:
        raise KeyError(f"{where} has no {key!r} field; fields found: {sorted(record)}")
    return record[key]
