"""Rows of a task file as researchers have them: CSV (UTF-8, with or without the byte-order mark a
spreadsheet's "CSV UTF-8" export writes) or Excel `.xlsx` (the first sheet; openpyxl).

`read_rows` gives one dict per non-empty row, keyed by the header's column names (trimmed, lower-case),
values as trimmed strings. Whatever keeps the file from being read — missing, not UTF-8, not a workbook,
a required column absent, no rows — is a ValueError (FileNotFoundError) naming the file, raised before
any dialogue starts.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

CSV_SUFFIXES = (".csv", ".txt")
XLSX_SUFFIXES = (".xlsx", ".xlsm")


def cell_text(value) -> str:
    """A spreadsheet cell as text: None -> "", 3.0 -> "3", anything else str() and trimmed."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _csv_table(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig drops a leading BOM if present
            return [list(row) for row in csv.reader(f)]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error}); save it as 'CSV UTF-8' or as .xlsx") from None


def _xlsx_table(path: Path) -> list[list[str]]:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as error:
        raise ValueError(f"{path}: not a readable .xlsx workbook ({type(error).__name__}: {error})") from None
    try:
        return [[cell_text(v) for v in row] for row in workbook.worksheets[0].iter_rows(values_only=True)]
    finally:
        workbook.close()


def read_table(path: str | Path) -> list[list[str]]:
    """All rows of the file as lists of cell texts (the header row first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        return _xlsx_table(path)
    if suffix in CSV_SUFFIXES:
        return _csv_table(path)
    raise ValueError(f"{path}: unsupported task file type {suffix!r}; use CSV ({', '.join(CSV_SUFFIXES)}) "
                     f"or Excel ({', '.join(XLSX_SUFFIXES)}; an old .xls must be saved as .xlsx)")


def _non_empty(rows: Iterable[list[str]]) -> list[list[str]]:
    return [[c.strip() for c in row] for row in rows if any(c.strip() for c in row)]


def read_rows(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Dicts keyed by the (lower-case) header of the first non-empty row; `required` columns must exist."""
    rows = _non_empty(read_table(path))
    if not rows:
        raise ValueError(f"{path}: empty file, expected the columns {list(required)}")
    header = [c.lower() for c in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {rows[0]}, expected {list(required)}")
    records = [dict(zip(header, row + [""] * (len(header) - len(row)))) for row in rows[1:]]
    if not records:
        raise ValueError(f"{path}: no task rows")
    return records
