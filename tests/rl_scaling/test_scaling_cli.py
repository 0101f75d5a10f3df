"""The commands tools/fit_scaling_law.py and tools/plan_size.py end to end, and the planner on a case computed
by hand."""

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rl_scaling.scaling import fit, planner, report, synthetic, table
from tests.load_file import load_module

TOOLS = Path(__file__).resolve().parents[2] / "tools"

SIZES = [1e5, 3e5, 1e6, 3e6, 1e7]


@pytest.fixture(scope="module")
def fit_cli():
    yield load_module(TOOLS / "fit_scaling_law.py", "fit_scaling_law")
    sys.modules.pop("fit_scaling_law", None)


@pytest.fixture(scope="module")
def plan_cli():
    yield load_module(TOOLS / "plan_size.py", "plan_size")
    sys.modules.pop("plan_size", None)


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's signature and IHDR chunk; fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    """A parquet table: base variant with a tau sweep (law in D) and an instruct variant."""
    parts = []
    for tau in (1, 4):
        t = synthetic.synthetic_metrics_table(SIZES, 0.6, 1e6, x_name="D", seeds=2, steps=40,
                                              rng_seed=tau)
        t["L"] = t["L"] * (1 + 0.02 * np.log(tau))
        t["tau"] = np.full(len(t["L"]), tau)
        parts.append(t)
    t = synthetic.synthetic_metrics_table(SIZES, 0.5, 3e5, x_name="D", seeds=2, steps=40,
                                          variant="instruct")
    t["tau"] = np.full(len(t["L"]), 1)
    parts.append(t)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return table.write_metrics_table(merged, tmp_path_factory.mktemp("m") / "metrics.parquet")


def test_fit_cli_writes_fit_json_and_plots(fit_cli, metrics, tmp_path, capsys):
    out = tmp_path / "fit"
    code = fit_cli.main(["--metrics", str(metrics), "--x", "D", "--protocol", "inter",
                         "--variant", "base", "--select", "tau=1", "--out", str(out),
                         "--objective", "log", "--bootstrap", "3"])
    assert code == 0
    rep = json.loads((out / "fit.json").read_text())
    for key in ("k_max", "n0", "e0", "r2", "objective", "protocol", "prediction", "free_k",
                "alternative", "bootstrap", "x", "variant"):
        assert key in rep, key
    assert rep["objective"] == "log" and rep["protocol"] == "inter" and rep["x"] == "D"
    assert set(rep["e0"]) == {"100000", "300000", "1000000", "3000000", "10000000"}
    assert rep["k_max"] == pytest.approx(0.6, rel=0.1)
    assert rep["prediction"]["mape"] < 0.05 and rep["prediction"]["held_out_size"] == 1e7
    assert rep["r2"]["L"] > 0.98 and rep["r2"]["log_L"] > 0.98
    for name in ("loss_vs_D", "k_vs_n", "predicted_vs_observed", "data_reuse"):
        width, height = png_size(out / f"{name}.png")
        assert width > 200 and height > 200, name
    assert list((out / "tensorboard").glob("events.out.tfevents*"))
    printed = capsys.readouterr().out
    assert "K_max = " in printed and "MAPE" in printed


def test_fit_cli_as_a_script_and_fit_json_reads_back(metrics, tmp_path):
    out = tmp_path / "fit"
    done = subprocess.run(
        [sys.executable, str(TOOLS / "fit_scaling_law.py"), "--metrics", str(metrics), "--x", "C",
         "--protocol", "intra", "--variant", "instruct", "--out", str(out), "--no-alternative",
         "--no-tensorboard"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fitted, rep = report.load_fit_report(out / "fit.json")
    assert rep["protocol"] == "intra" and "alternative" not in rep
    assert fitted.k_max == pytest.approx(0.5, rel=0.1)
    assert sorted(fitted.e0) == SIZES
    assert png_size(out / "loss_vs_C.png")[0] > 200


@pytest.mark.parametrize("args,message", [
    (["--variant", "base"], "not unique per"),                      # tau varies, no --select
    ([], "several variants"),
    (["--variant", "base", "--select", "tau=1", "--protocol", "inter", "--select", "size=1e5"],
     "at least 3 sizes"),
])
def test_fit_cli_bad_input_errors(fit_cli, metrics, tmp_path, capsys, args, message):
    code = fit_cli.main(["--metrics", str(metrics), "--x", "D", "--out", str(tmp_path), *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_fit_cli_missing_column(fit_cli, tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("variant,size,seed,step,C,L\nbase,1,0,1,1.0,0.5\n")
    assert fit_cli.main(["--metrics", str(path), "--x", "D", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) ['D']" in err and "columns found" in err


HAND_FIT = fit.SaturatingFit(k_max=0.5, n0=1e6, e0={1e6: 2.0, 4e6: 4.0}, objective="log",
                             r2_linear=1.0, r2_log=1.0)


def test_planner_by_hand():
    # k(1e6) = 0.25, k(4e6) = 0.4.  X = e^10: L = exp(-2.5 + 2) = 0.607 vs exp(-4 + 4) = 1.
    rows = planner.plan_budget(HAND_FIT, math.exp(10))
    assert [r.loss for r in rows] == pytest.approx([math.exp(-0.5), 1.0])
    assert planner.best_size(rows).size == 1e6
    # X = e^20: exp(-5 + 2) = 0.0498 vs exp(-8 + 4) = 0.0183: the larger model wins.
    rows = planner.plan_budget(HAND_FIT, math.exp(20), sizes=[1e6, 2e6, 4e6])
    assert planner.best_size(rows).size == 4e6
    # 2e6 lies halfway in ln N: E = 3, k = 1/3, L = exp(-20/3 + 3).
    middle = rows[1]
    assert (middle.e0_source, middle.e0) == ("interpolated", pytest.approx(3.0))
    assert middle.loss == pytest.approx(math.exp(-20 / 3 + 3))


def test_planner_refuses_what_it_cannot_know():
    with pytest.raises(ValueError, match="outside the fitted sizes"):
        planner.plan_budget(HAND_FIT, 1e5, sizes=[8e6])
    with pytest.raises(ValueError, match="budget must be positive"):
        planner.plan_budget(HAND_FIT, 0.0)


def test_plan_cli(plan_cli, tmp_path, capsys):
    rep = {"k_max": 0.5, "n0": 1e6, "e0": {"1000000": 2.0, "4000000": 4.0}, "x": "C",
           "objective": "log", "protocol": "full", "r2": {"L": 1.0, "log_L": 1.0}}
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(rep))
    assert plan_cli.main(["--fit", str(path), "--budget", str(math.exp(20)), "--x", "C"]) == 0
    assert "best: N = 4e+06" in capsys.readouterr().out
    assert plan_cli.main(["--fit", str(path), "--budget", "1e5", "--x", "D"]) == 2
    assert "fit of L vs C" in capsys.readouterr().err
    path.write_text(json.dumps({"k_max": 0.5}))
    assert plan_cli.main(["--fit", str(path), "--budget", "1e5", "--x", "C"]) == 2
    assert "missing key(s)" in capsys.readouterr().err
