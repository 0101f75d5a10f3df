"""The time plan (rl_scaling/time_plan.py, time_plan_report.py) and the chip-hour budgets of tools/plan_size.py."""

import json
import sys
from pathlib import Path

import pytest

from common.config import get_preset
from common.mesh_presets import RECOMMENDED, MeshPreset
from rl_scaling import time_plan as tp
from rl_scaling import time_plan_report as report
from rl_scaling.accounting import non_embedding_params
from rl_scaling.scaling import planner
from rl_scaling.scaling.report import load_fit_report
from tests.load_file import load_module

TOOLS = Path(__file__).resolve().parents[2] / "tools"
MODEL = get_preset("qwen2_5_0_5b")
RECIPE = tp.Recipe(prompts_per_step=512, group_size=8, kl_coef=0.001, old_logprob_forward=True, ppo_epochs=1,
                   steps=105)
LENGTHS = tp.Lengths(prompt=256, response=1024)


def one_gpu(**changes) -> tp.SliceLayout:
    layout = tp.SliceLayout(preset="1xh100", chip=tp.CHIPS["h100"], chips=1, data=1, fsdp=1, tensor=1, remat=True,
                            in_flight=128)
    return layout.replace(**changes)


@pytest.fixture(scope="module")
def plan_cli():
    yield load_module(TOOLS / "plan_size.py", "plan_size")
    sys.modules.pop("plan_size", None)


@pytest.fixture(scope="module")
def time_cli():
    yield load_module(TOOLS / "time_plan.py", "time_plan_tool")
    sys.modules.pop("time_plan_tool", None)


def test_step_is_the_sum_of_its_phases():
    step = tp.step_time(MODEL, RECIPE, LENGTHS, one_gpu())
    assert step.seconds == pytest.approx(step.decode.seconds + step.prefill_seconds + step.logprob_seconds
                                         + step.update_seconds)
    # the phases split the ledger's count exactly; remat recomputes one forward of the three in the update
    f = step.flops
    assert f.prefill + f.decode + f.logprob + f.update == f.c_full
    assert 3 * f.remat == f.update
    assert tp.phase_flops(MODEL, RECIPE, LENGTHS, remat=False).remat == 0
    assert f.c_paper == 6 * non_embedding_params(MODEL) * 4096 * (256 + 1024)


def test_decode_is_bytes_over_bandwidth():
    layout = one_gpu(rollout="static")
    d = tp.step_time(MODEL, RECIPE, LENGTHS, layout).decode
    assert d.bound == "HBM" and d.gather_seconds == 0
    n = non_embedding_params(MODEL)
    weights = 2 * (n + MODEL.vocab_size * MODEL.hidden_size)
    kv = 128 * (256 + 1024) * 2 * MODEL.num_layers * MODEL.num_kv_heads * MODEL.head_dim * 2
    assert (d.weight_bytes, d.kv_bytes, d.calls, d.steps) == (weights, kv, 32, 32 * 1024)
    assert d.seconds == pytest.approx(32 * 1024 * (weights + kv) / (3350e9 * 0.6))
    faster = tp.ChipSpec("fast", 989e12, 2 * 3350e9, 450e9, "test")
    assert tp.step_time(MODEL, RECIPE, LENGTHS, layout.replace(chip=faster)).decode.seconds == pytest.approx(
        d.seconds / 2)
    assert tp.step_time(MODEL, RECIPE, LENGTHS, layout, tp.Shares(hbm=0.3)).decode.seconds == pytest.approx(
        2 * d.seconds)


def test_decode_gather_and_flop_bounds():
    # the static sampler on fsdp 8: each chip receives 7/8 of the weights per decode step over the interconnect
    layout = one_gpu(chips=8, fsdp=8, in_flight=1024, rollout="static")
    d = tp.step_time(MODEL, RECIPE, LENGTHS, layout).decode
    assert d.gather_bytes == d.weight_bytes * 7 // 8
    assert d.gather_seconds == pytest.approx(d.steps * d.gather_bytes / (450e9 * 0.6))
    assert d.seconds == max(d.hbm_seconds, d.gather_seconds, d.flops_seconds)
    no_ici = tp.ChipSpec("x", 1e12, 1e12, None, "test")
    with pytest.raises(ValueError, match="no interconnect bandwidth"):
        tp.step_time(MODEL, RECIPE, LENGTHS, layout.replace(chip=no_ici))


def test_the_engine_reads_live_pages_and_gathers_nothing():
    layout = one_gpu(chips=8, fsdp=8, in_flight=1024)
    assert layout.rollout == "engine"  # what the trainer runs on an accelerator
    e = tp.step_time(MODEL, RECIPE, LENGTHS, layout).decode
    s = tp.step_time(MODEL, RECIPE, LENGTHS, layout.replace(rollout="static")).decode
    slot = 2 * MODEL.num_layers * MODEL.num_kv_heads * MODEL.head_dim * 2
    # 128 sequences a chip, each on average its prompt, half its response and half a page of live keys
    assert e.kv_bytes == 128 * (256 + (1024 + 16) // 2) * slot and s.kv_bytes == 128 * (256 + 1024) * slot
    assert (e.weight_bytes, e.gather_bytes, e.gather_seconds) == (s.weight_bytes, 0, 0.0) and s.gather_bytes > 0
    assert e.bound == "HBM" and e.seconds < s.seconds
    with pytest.raises(ValueError, match="rollout must be one of"):
        one_gpu(rollout="vllm")
    text = report.bytes_table([report.plan_on_slice("qwen2_5_7b", "v5p-64")], lambda p: p.max_lengths, tp.Shares())
    assert "| qwen2_5_7b | v5p-64 | 32 |" in text and "(ICI)" in text  # the static sampler's gather bound there


def test_doubling_chips_halves_the_flop_bound_phases():
    small, big = one_gpu(chips=8, data=8, in_flight=1024), one_gpu(chips=16, data=16, in_flight=1024)
    a, b = (tp.step_time(MODEL, RECIPE, LENGTHS, x) for x in (small, big))
    for name in ("prefill_seconds", "logprob_seconds", "update_seconds"):
        assert getattr(b, name) == pytest.approx(getattr(a, name) / 2), name
    assert b.decode.flops_seconds == pytest.approx(a.decode.flops_seconds / 2)
    # half the sequences per chip: the KV bytes per chip halve, the weights each chip reads do not
    assert (b.decode.kv_bytes, b.decode.weight_bytes) == (a.decode.kv_bytes // 2, a.decode.weight_bytes)


def test_chip_hours_and_the_c_rate():
    assert tp.run_chip_hours(100.0, 32, 105) == pytest.approx(100 * 32 * 105 / 3600)
    step = tp.step_time(MODEL, RECIPE, LENGTHS, one_gpu())
    rate = tp.paper_flops_per_chip_second(step, 1)
    assert rate * step.seconds == pytest.approx(step.flops.c_paper)
    assert tp.chip_hours_to_flops(2.0, rate) == pytest.approx(7200 * rate)


@pytest.mark.parametrize("build,message", [
    (lambda: tp.chip_hours_to_flops(-1.0, 1e12), "must be positive"),
    (lambda: tp.Shares(mfu=0.0), "share mfu"),
    (lambda: tp.Lengths(0, 10), "lengths must be"),
    (lambda: one_gpu(chips=2), "does not cover"),
    (lambda: one_gpu(in_flight=0), "in flight"),
    (lambda: report.scenario_lengths(None, "median"), "unknown lengths"),
])
def test_bad_values_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unknown_chip_and_size():
    with pytest.raises(KeyError, match="no chip spec"):
        tp.chip_of(MeshPreset("9xb300", "gpu", 9, 1, 1, (1,) * 7))
    with pytest.raises(KeyError, match="unknown size"):
        report.plan_on_slice("qwen2_5_9b", "v5p-8")
    with pytest.raises(KeyError, match="unknown mesh preset"):
        report.plan_on_slice("qwen2_5_7b", "v9-8")


def test_recommended_slices_render():
    text = report.document(list(RECOMMENDED), lambda size: [RECOMMENDED[size]])
    for heading in ("## At the recipe's maximum lengths (2048 + 4096 tokens)", "## At mean lengths (256 + 1024"):
        assert heading in text
    rows = [line for line in text.splitlines() if line.startswith("| qwen2_5_")]
    assert len(rows) == 3 * len(RECOMMENDED)  # two time tables and the bytes table
    for size, preset in RECOMMENDED.items():
        mine = [r for r in rows if r.startswith(f"| {size} | {preset} |")]
        assert len(mine) == 3 and all("—" not in r for r in mine) and sum("**" in r for r in mine) == 2, size
    assert "MFU" in text and "60% of HBM" in text


def test_rows_that_cannot_fit_say_so():
    plan = report.plan_on_slice("qwen2_5_72b", "1xh100")
    assert plan.memory.startswith("does not fit")
    assert "does not fit" in report.markdown_table([plan], lambda p: p.max_lengths, tp.Shares())


def test_time_plan_tool_writes_markdown(time_cli, tmp_path, capsys):
    out = tmp_path / "time_plan.md"
    assert time_cli.main(["--sizes", "qwen2_5_0_5b", "--presets", "1xh100", "--mfu", "0.5", "--out", str(out)]) == 0
    text = out.read_text()
    assert "--mfu 0.5" in text and "50% of the slice's peak" in text and "| qwen2_5_0_5b | 1xh100 | 1 |" in text
    assert time_cli.main(["--sizes", "qwen2_5_0_5b", "--presets", "v9-8"]) == 2
    assert "unknown mesh preset 'v9-8'" in capsys.readouterr().err
    assert time_cli.main(["--sizes", "qwen2_5_0_5b", "--mfu", "1.5"]) == 2
    assert "share mfu" in capsys.readouterr().err


@pytest.fixture
def qwen_fit(tmp_path):
    sizes = {size: non_embedding_params(get_preset(size)) for size in ("qwen2_5_0_5b", "qwen2_5_7b")}
    rep = {"k_max": 0.5, "n0": 1e9, "e0": {str(n): e for n, e in zip(sizes.values(), (2.0, 4.0))}, "x": "C",
           "objective": "log", "protocol": "full", "r2": {"L": 1.0, "log_L": 1.0}}
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(rep))
    return path, sizes


def test_chip_hours_budget_is_the_flops_budget_by_hand(plan_cli, qwen_fit, capsys):
    path, sizes = qwen_fit
    n = sizes["qwen2_5_7b"]
    # by hand: C of one mean-length step / (step seconds x chips) on v5p-64, times 3600 s per chip-hour
    plan = report.plan_on_slice("qwen2_5_7b", "v5p-64")
    seconds = tp.step_time(get_preset("qwen2_5_7b"), plan.recipe, report.MEAN_LENGTHS, plan.layout).seconds
    c_step = 6 * n * 512 * 8 * (report.MEAN_LENGTHS.prompt + report.MEAN_LENGTHS.response)
    budget_c = 5000 * 3600 * c_step / (seconds * 32)
    assert plan_cli.main(["--fit", str(path), "--budget", "5000", "--x", "chip-hours", "--slice", "v5p-64",
                          "--sizes", f"{n}"]) == 0
    out = capsys.readouterr().out
    assert f"qwen2_5_7b on v5p-64: 5000 chip-hours x 3600 s x {budget_c / 5000 / 3600:.4g} FLOP/s" in out
    fitted, _ = load_fit_report(path)
    by_hand = planner.plan_budget(fitted, budget_c, [n])[0]
    assert f"{by_hand.loss:.4f}" in out.splitlines()[-2] and f"{budget_c:.4g}" in out.splitlines()[-2]
    # the same budget given as C picks the same prediction
    assert plan_cli.main(["--fit", str(path), "--budget", repr(budget_c), "--x", "C", "--sizes", f"{n}"]) == 0
    assert f"predicted L = {by_hand.loss:.4f}" in capsys.readouterr().out


def test_chip_hours_each_size_on_its_recommended_slice(plan_cli, qwen_fit, capsys):
    path, _ = qwen_fit
    assert plan_cli.main(["--fit", str(path), "--budget", "100", "--x", "chip-hours", "--lengths", "max"]) == 0
    out = capsys.readouterr().out
    assert "qwen2_5_0_5b on v5e-16" in out and "qwen2_5_7b on v5p-64" in out and "at max lengths" in out
    assert report.qwen_size_for(7e9) == report.qwen_size_for(non_embedding_params(get_preset("qwen2_5_7b")))


@pytest.mark.parametrize("args,message", [
    (["--budget", "-5", "--x", "chip-hours"], "must be positive"),
    (["--budget", "5", "--x", "chip-hours", "--slice", "v9-8"], "unknown mesh preset 'v9-8'"),
    (["--budget", "5", "--x", "chip-hours", "--sizes", "2e9"], "no Qwen2.5 size"),
    (["--budget", "5", "--x", "C", "--slice", "v5p-64"], "apply to a budget in chip-hours"),
    (["--budget", "-5", "--x", "C"], "budget must be positive"),
])
def test_plan_cli_bad_input(plan_cli, qwen_fit, capsys, args, message):
    path, _ = qwen_fit
    assert plan_cli.main(["--fit", str(path), *args]) == 2
    assert message in capsys.readouterr().err


def test_chip_hours_need_a_fit_in_c(plan_cli, qwen_fit, capsys):
    path, _ = qwen_fit
    rep = json.loads(path.read_text())
    path.write_text(json.dumps(rep | {"x": "D"}))
    assert plan_cli.main(["--fit", str(path), "--budget", "5", "--x", "chip-hours"]) == 2
    assert "converted to C" in capsys.readouterr().err


def test_time_plan_runs_as_a_script_from_another_directory(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, str(TOOLS / "time_plan.py"), "--sizes", "qwen2_5_0_5b", "--presets",
                           "1xh100"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| qwen2_5_0_5b | 1xh100 | 1 | 1/1/1, remat |" in done.stdout
