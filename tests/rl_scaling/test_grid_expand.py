"""rl_scaling/grid/expand.py: a grid config -> runs, ids and trainer overrides."""

from pathlib import Path

import ml_collections
import pytest

from rl_scaling.grid import expand

REPO = Path(__file__).resolve().parents[2]


def test_expansion_and_stable_run_ids(fake_grid):
    grid, root, _ = fake_grid
    runs = expand.expand_grid(grid)
    assert len(runs) == 2 * 2 * 2                        # sizes x tau x seeds
    assert [r.run_id for r in runs[:3]] == [
        "base-tiny_a-tau1-seed0", "base-tiny_a-tau1-seed1", "base-tiny_a-tau4-seed0"]
    assert runs[-1].run_id == "base-tiny_b-tau4-seed1"
    assert [r.run_id for r in expand.expand_grid(grid)] == [r.run_id for r in runs]
    assert runs[0].workdir(root) == root / "base-tiny_a-tau1-seed0"
    # "-" separates the fields, so values keep only letters, digits, "_" and ".".
    assert expand.run_id_of({"model": "Qwen/2.5 0.5B", "variant": "base", "seed": 0,
                             "lr": 1e-6}) == "base-Qwen_2.5_0.5B-lr1e_06-seed0"


def test_bad_grids(fake_grid, tmp_path):
    grid, root, _ = fake_grid
    path = tmp_path / "g.py"
    path.write_text("import ml_collections\ndef get_config():\n"
                    "    return ml_collections.ConfigDict({'sizes': ('a',)})\n")
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['base_config', 'variants', 'seeds'\]"):
        expand.load_grid_config(path)
    with pytest.raises(FileNotFoundError, match="no config file at"):
        expand.load_grid_config(tmp_path / "missing.py")
    clash = ml_collections.ConfigDict({**grid.to_dict(), "settings": {"size": (1, 2)}})
    with pytest.raises(ValueError, match="setting 'size' clashes"):
        expand.expand_grid(clash)


def test_example_grid_configs_expand():
    family = expand.load_grid_config(REPO / "configs/grids/qwen2_5_family.py")
    runs = expand.expand_grid(family)
    assert len(runs) == 7 * 2 * 3
    assert expand.param_count(family, "qwen2_5_0_5b") == pytest.approx(3.58e8, rel=0.01)
    reuse = expand.expand_grid(expand.load_grid_config(REPO / "configs/grids/data_reuse.py"))
    assert len(reuse) == 3 * 9 * 3 and len({r.run_id for r in reuse}) == len(reuse)
    group = expand.load_grid_config(REPO / "configs/grids/group_size.py")
    assert len(expand.expand_grid(group)) == 3 * 4 * 3
