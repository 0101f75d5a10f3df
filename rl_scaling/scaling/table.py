"""Metrics-table I/O: one row per (variant, size, seed, step) evaluation, CSV or parquet.

The table is kept as a plain dict of equal-length numpy columns (no pandas dependency).
Required columns: variant, size, seed, step, C, D, L (size = parameter count N; C in FLOPs;
D in prompts; L = 1 - pass@1). Any other columns (settings such as tau or G) are carried along.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

REQUIRED_COLUMNS = ("variant", "size", "seed", "step", "C", "D", "L")
NUMERIC_COLUMNS = ("size", "seed", "step", "C", "D", "L")

Table = dict  # str -> np.ndarray, all of one length


def table_length(table: Table) -> int:
    """Number of rows; raises if the columns have different lengths."""
    lengths = {name: len(col) for name, col in table.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"table columns have different lengths: {lengths}")
    return next(iter(lengths.values()), 0)


def check_columns(table: Table, required=REQUIRED_COLUMNS, source: str = "table") -> None:
    """Raise a ValueError naming the missing columns and the columns found."""
    missing = [c for c in required if c not in table]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; columns found: {sorted(table)}")


def _parse_column(values: list[str]) -> np.ndarray:
    """Numbers when every cell parses as a float (ints stay ints), else strings."""
    try:
        as_float = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return np.array(values, dtype=object)
    if all(v.lstrip("-").isdigit() for v in values):
        return as_float.astype(np.int64)
    return as_float


def read_metrics_table(path, required=REQUIRED_COLUMNS) -> Table:
    """Read a metrics table from CSV (`.csv`) or parquet (`.parquet`/`.pq`).

    Returns a dict column -> np.ndarray (numbers as int64/float64, text as object arrays).
    Raises FileNotFoundError for a missing file and ValueError naming missing columns.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"metrics table not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            raise ValueError(f"{path}: empty CSV file (no header)")
        header, body = rows[0], rows[1:]
        bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
        if bad:
            raise ValueError(f"{path}: rows {bad[:5]} do not have {len(header)} fields")
        table = {name: _parse_column([r[i] for r in body]) for i, name in enumerate(header)}
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        arrow = pq.read_table(path)
        table = {}
        for name in arrow.column_names:
            col = arrow.column(name).to_numpy(zero_copy_only=False)
            table[name] = col.astype(object) if col.dtype.kind in "OUS" else col
    else:
        raise ValueError(f"{path}: unknown table format {suffix!r}; use .csv or .parquet")
    check_columns(table, required, source=str(path))
    for name in NUMERIC_COLUMNS:
        if name in table and table[name].dtype == object:
            raise ValueError(f"{path}: column {name!r} must be numeric, "
                             f"found e.g. {table[name][:3]}")
    return table


def write_metrics_table(table: Table, path) -> pathlib.Path:
    """Write `table` as CSV or parquet (chosen by the suffix of `path`); returns the path."""
    path = pathlib.Path(path)
    table_length(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        names = list(table)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            for row in zip(*(table[n] for n in names)):
                writer.writerow([_cell(v) for v in row])
    elif suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: list(v) if v.dtype == object else v
                                 for k, v in table.items()}), path)
    else:
        raise ValueError(f"{path}: unknown table format {suffix!r}; use .csv or .parquet")
    return path


def _cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def select_rows(table: Table, mask) -> Table:
    """The rows where the boolean `mask` (shape (rows,)) is true."""
    mask = np.asarray(mask, dtype=bool)
    return {k: v[mask] for k, v in table.items()}


def filter_table(table: Table, where: dict) -> Table:
    """Keep rows whose column equals the given value for every (column, value) in `where`.

    Values are compared as strings when the column is text and as floats otherwise, so
    {"tau": "1"} selects tau == 1. Raises if a column is missing or nothing is left.
    """
    n = table_length(table)
    mask = np.ones(n, dtype=bool)
    for column, value in where.items():
        if column not in table:
            raise ValueError(f"cannot select on {column!r}: no such column; "
                             f"columns: {sorted(table)}")
        col = table[column]
        if col.dtype == object:
            mask &= col.astype(str) == str(value)
        else:
            mask &= np.isclose(col.astype(np.float64), float(value))
    if not mask.any():
        raise ValueError(f"no rows match {where}")
    return select_rows(table, mask)


def variant_rows(table: Table, variant: str | None) -> tuple[Table, str]:
    """Rows of one variant (base/instruct/...). `None` is allowed when the table holds only one.

    Returns (rows, the variant's name). Raises naming the variants found otherwise.
    """
    check_columns(table, ("variant",))
    names = sorted({str(v) for v in table["variant"]})
    if variant is None:
        if len(names) != 1:
            raise ValueError(f"the table holds several variants {names}; choose one with --variant")
        variant = names[0]
    if variant not in names:
        raise ValueError(f"variant {variant!r} not in the table; variants found: {names}")
    return select_rows(table, table["variant"].astype(str) == variant), variant
