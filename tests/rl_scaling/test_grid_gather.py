"""rl_scaling/grid/gather.py: finished runs' metrics -> one table; what it refuses."""

from pathlib import Path

import ml_collections
import numpy as np
import pytest

from rl_scaling.grid.gather import gather
from rl_scaling.grid.run import run_grid
from tests.load_file import load_module


def test_gather_builds_the_table(fake_grid, tmp_path):
    grid, root, _ = fake_grid
    run_grid(grid, root)
    table = gather(root, grid)
    assert list(table)[:9] == ["variant", "size", "seed", "step", "C", "D", "L", "model",
                               "run_id"]
    assert "tau" in table and len(table["L"]) == 8 * 4
    row = (table["run_id"] == "base-tiny_b-tau4-seed1") & (table["step"] == 3)
    assert row.sum() == 1
    assert table["size"][row][0] == 2e6 and table["tau"][row][0] == 4
    assert table["C"][row][0] == 3000.0 and table["D"][row][0] == 24.0
    assert table["L"][row][0] == pytest.approx(1 / 5 + 0.01)
    # Without the grid, from the run.json files the runner wrote: the same table.
    again = gather(root)
    order = np.lexsort((table["step"], table["run_id"].astype(str)))
    order_again = np.lexsort((again["step"], again["run_id"].astype(str)))
    for name in table:
        assert list(table[name][order]) == list(again[name][order_again]), name
    tool = load_module(Path(__file__).resolve().parents[2] / "tools" / "grid.py", "grid_tool")
    assert tool.main(["gather", "--root", str(root), "--out", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().startswith("variant,size,seed,step,C,D,L,model")


def test_gather_skips_unfinished_and_names_bad_metrics(fake_grid, monkeypatch):
    grid, root, _ = fake_grid
    monkeypatch.setenv("FAKE_CRASH_ON", "base-tiny_a-tau1-seed0")
    run_grid(grid, root)
    assert len(gather(root, grid)["L"]) == 7 * 4
    assert len(gather(root, grid, include_unfinished=True)["L"]) == 7 * 4 + 2
    bad = root / "base-tiny_a-tau1-seed1" / "metrics.jsonl"
    bad.write_text('{"step": 1, "eval/L": 0.5, "C": 1.0}\n')
    with pytest.raises(ValueError, match=r"step 1 has 'eval/L' but no 'D' \(column D\)"):
        gather(root, grid)
    bad.write_text('{"step": 1, "eval/L": 0.5\n')
    with pytest.raises(ValueError, match="metrics.jsonl:1: not valid JSON"):
        gather(root, grid)


def test_gather_needs_a_parameter_count_and_the_metrics_of_finished_runs(fake_grid):
    grid, root, _ = fake_grid
    unknown = ml_collections.ConfigDict({**grid.to_dict(), "param_counts": {}, "sizes": ("x",)})
    run_grid(unknown, root)
    with pytest.raises(ValueError, match="no parameter count for model 'x'"):
        gather(root, unknown)
    (root / "base-x-tau1-seed0" / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match="base-x-tau1-seed0 is finished but has no"):
        gather(root, unknown)
