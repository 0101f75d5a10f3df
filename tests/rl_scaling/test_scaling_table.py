"""Metrics-table I/O, point preparation and the errors bad input must raise."""

import numpy as np
import pytest

from rl_scaling.scaling import curves, table


def _tiny_table():
    return {"variant": np.array(["base"] * 6, dtype=object),
            "size": np.array([1e6] * 6), "seed": np.array([0, 0, 0, 1, 1, 1]),
            "step": np.array([0, 1, 2, 0, 1, 2]), "C": np.array([0.0, 10, 20, 0, 10, 20]),
            "D": np.array([0.0, 8, 16, 0, 8, 16]), "L": np.array([0.9, 0.8, 0.6, 0.9, 0.6, 0.4]),
            "tau": np.array([1, 1, 1, 1, 1, 1])}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_roundtrip(tmp_path, suffix):
    written = _tiny_table()
    path = table.write_metrics_table(written, tmp_path / f"t{suffix}")
    read = table.read_metrics_table(path)
    assert set(read) == set(written)
    for name, col in written.items():
        if col.dtype == object:
            assert list(read[name]) == list(col)
        else:
            np.testing.assert_allclose(read[name], col)


def test_seed_average_by_hand():
    rows = curves.seed_rows_from_table(_tiny_table(), "D")
    assert len(rows.loss) == 4                      # step 0 dropped
    avg = curves.average_seeds(rows)
    np.testing.assert_allclose(avg.loss, [0.7, 0.5])
    np.testing.assert_allclose(avg.x, [8, 16])
    # Seed 1 drawn twice, seed 0 not at all: the average is seed 1's curve.
    only_seed_1 = curves.average_seeds(rows, weights=np.where(rows.seed == 1, 2.0, 0.0))
    np.testing.assert_allclose(only_seed_1.loss, [0.6, 0.4])


def test_missing_column_is_named(tmp_path):
    bad = _tiny_table()
    del bad["L"]
    path = table.write_metrics_table(bad, tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['L'\].*columns found"):
        table.read_metrics_table(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        table.read_metrics_table(tmp_path / "nope.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(ValueError, match="unknown table format"):
        table.read_metrics_table(tmp_path / "t.xlsx")


@pytest.mark.parametrize("column,value", [("L", 0.0), ("L", -0.1), ("D", 0.0), ("size", -1.0),
                                          ("L", np.nan)])
def test_non_positive_values_are_named(column, value):
    bad = _tiny_table()
    bad[column] = bad[column].astype(float)
    bad[column][4] = value                          # a step > 0 row
    with pytest.raises(ValueError, match=f"column '{column}' must be positive"):
        curves.seed_rows_from_table(bad, "D")


def test_duplicate_rows_ask_for_a_selection():
    doubled = {k: np.concatenate([v, v]) for k, v in _tiny_table().items()}
    doubled["tau"] = np.array([1] * 6 + [2] * 6)
    with pytest.raises(ValueError, match="not unique per"):
        curves.seed_rows_from_table(doubled, "D")
    rows = curves.seed_rows_from_table(table.filter_table(doubled, {"tau": "2"}), "D")
    assert len(rows.loss) == 4
    with pytest.raises(ValueError, match="no such column"):
        table.filter_table(doubled, {"G": "4"})


def test_several_variants_need_a_choice():
    two = {k: np.concatenate([v, v]) for k, v in _tiny_table().items()}
    two["variant"] = np.array(["base"] * 6 + ["instruct"] * 6, dtype=object)
    with pytest.raises(ValueError, match=r"several variants \['base', 'instruct'\]"):
        table.variant_rows(two, None)
    with pytest.raises(ValueError, match="variant 'chat' not in the table"):
        table.variant_rows(two, "chat")
    rows, name = table.variant_rows(two, "instruct")
    assert name == "instruct" and len(rows["L"]) == 6


def test_bad_x_and_too_short_curves():
    with pytest.raises(ValueError, match="x must be 'C' or 'D'"):
        curves.seed_rows_from_table(_tiny_table(), "T")
    avg = curves.average_seeds(curves.seed_rows_from_table(_tiny_table(), "D"))
    with pytest.raises(ValueError, match="size 1e\\+06 has 2 evaluation points"):
        curves.split_early(avg, 0.25)
