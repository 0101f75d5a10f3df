"""The cross-paper command: checkpoints found by path or under a run directory (tiny random ones, written by
common's checkpoint writer), one grid per checkpoint, and the table and plot against training step; scripted
agents whose danger and questionnaire answers grow with the step, and the command itself on a real tiny model."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from flax import nnx
from tests.agent_safety.scripted_replies import is_judge, is_questionnaire

from agent_safety.backends import ScriptedBackend
from agent_safety.checkpoint_sweep import (PLOT, TABLE_CSV, TABLE_MD, checkpoint_step, evaluate_checkpoints,
                                           resolve_checkpoints)
from agent_safety.run_config import default_config
from common.checkpoint.orbax_io import save_checkpoint
from common.config import get_preset
from common.model import Decoder
from common.tokenizer import char_tokenizer

REPO = Path(__file__).resolve().parents[2]
# The questionnaire's letter per step: totals 12 (all A), 60 (all B), 108 (all C).
LETTER_AT_STEP = {0: "A", 2: "B", 3: "C"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as a GRPO run leaves it: steps 2 and 3 under checkpoints/, an unfinished save, logs."""
    root = tmp_path_factory.mktemp("sweep") / "run"
    model, tokenizer = Decoder(get_preset("tiny"), rngs=nnx.Rngs(0)), char_tokenizer()
    for step in (2, 3):
        save_checkpoint(root / "checkpoints" / f"step_{step:08d}", model, tokenizer, step=step)
    save_checkpoint(root / "checkpoints" / "step_00000004.orbax-checkpoint-tmp-17", model, tokenizer, step=4)
    save_checkpoint(root / "no_step", model, tokenizer)
    (root / "logs").mkdir()
    return root


def test_checkpoints_of_a_run_directory_by_step_relative_paths_made_absolute(run_dir, monkeypatch):
    monkeypatch.chdir(run_dir.parent)
    with pytest.raises(ValueError, match="no_step records no step"):
        resolve_checkpoints(run_dir="run")
    found = resolve_checkpoints(run_dir="run/checkpoints", base="smollm2-135m-instruct")
    assert [(c.step, c.label) for c in found] == [(0, "smollm2-135m-instruct"), (2, "run/checkpoints/step_00000002"),
                                                   (3, "run/checkpoints/step_00000003")]
    assert found[0].path == "smollm2-135m-instruct" and found[1].path == str(run_dir / "checkpoints/step_00000002")
    named = resolve_checkpoints(["run/checkpoints/step_00000003", str(run_dir / "checkpoints/step_00000002")])
    assert [c.step for c in named] == [2, 3] and all(Path(c.path).is_absolute() for c in named)


def test_unusable_checkpoint_lists_are_refused_by_name(run_dir, tmp_path):
    step3 = str(run_dir / "checkpoints/step_00000003")
    with pytest.raises(ValueError, match=r"several checkpoints at one step: \{3:"):
        resolve_checkpoints([step3], run_dir=str(run_dir / "checkpoints"))
    with pytest.raises(FileNotFoundError, match="logs is not a checkpoint directory.*--base"):
        resolve_checkpoints([str(run_dir / "logs")])
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        resolve_checkpoints(run_dir=str(run_dir / "logs"))
    with pytest.raises(FileNotFoundError, match="no base model at"):
        resolve_checkpoints(base=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="no checkpoint to evaluate"):
        resolve_checkpoints()
    with pytest.raises(ValueError, match="agents' backend is 'scripted'.*must be 'jax'"):
        evaluate_checkpoints(default_config(), resolve_checkpoints([step3]), tmp_path)


def scripted_agents(cfg):
    """Agents of the checkpoint at cfg.backend.model_path: from step 2 on they say something harmful, and
    their questionnaire letter is LETTER_AT_STEP's."""
    path = cfg.backend.model_path
    step = 0 if path == "smollm2-135m-instruct" else checkpoint_step(Path(path))

    def reply(request):
        if is_questionnaire(request):
            return "\n".join(f"{i}. ({LETTER_AT_STEP[step]})" for i in range(1, 13))
        return "a harmful plan" if step >= 2 else "a careful plan"

    return ScriptedBackend(reply, name=f"scripted:step{step}")


def harm_judge():
    def verdict(request):
        assert is_judge(request)
        return "VERDICT: DANGEROUS" if "harmful" in request.messages[-1].content else "VERDICT: SAFE"

    return ScriptedBackend(verdict, name="judge")


def sweep_config():
    c = default_config()
    c.backend.kind, c.judge_backend.kind = "jax", "jax"  # never built: the test passes its backends
    c.tasks.limit_per_kind = 1
    c.systems, c.attacks, c.rounds = ("autogen",), ("none", "HI-Traits"), 1
    return c


def test_one_grid_per_checkpoint_gathered_by_step(run_dir, tmp_path):
    checkpoints = resolve_checkpoints(run_dir=str(run_dir / "checkpoints"), base="smollm2-135m-instruct")
    rows, failed = evaluate_checkpoints(sweep_config(), checkpoints, tmp_path / "out", agents_for=scripted_agents,
                                        judge=harm_judge(), progress=False)
    assert failed == 0
    with open(tmp_path / "out" / TABLE_CSV) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 3 * 2 * 2  # steps x attacks x task kinds
    by_step = {}
    for row in table:
        by_step.setdefault(int(row["step"]), set()).add((float(row["PDR"]), float(row["mean DTDD"]), row["n"]))
    assert by_step == {0: {(0.0, 12.0, "1")}, 2: {(1.0, 60.0, "1")}, 3: {(1.0, 108.0, "1")}}
    assert {row["checkpoint"] for row in table if row["step"] == "2"} == {str(run_dir / "checkpoints/step_00000002")}
    assert "| step | checkpoint | system | attack |" in (tmp_path / "out" / TABLE_MD).read_text()
    assert (tmp_path / "out" / PLOT).stat().st_size > 10_000
    for step in (0, 2, 3):
        assert (tmp_path / "out" / f"step_{step:08d}" / "report.md").exists()

    def no_model(cfg):
        raise AssertionError("a rerun with every dialogue stored loads no model")

    again, _ = evaluate_checkpoints(sweep_config(), checkpoints, tmp_path / "out", agents_for=no_model,
                                    judge=harm_judge(), progress=False)
    assert again == rows


def test_by_step_figure_has_pdr_score_and_invalid_share_panels_for_both_task_kinds(run_dir, tmp_path):
    from agent_safety.plots import by_step_figure

    checkpoints = resolve_checkpoints(run_dir=str(run_dir / "checkpoints"), base="smollm2-135m-instruct")
    rows, _ = evaluate_checkpoints(sweep_config(), checkpoints, tmp_path, agents_for=scripted_agents,
                                   judge=harm_judge(), progress=False)
    fig = by_step_figure(rows)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["safe tasks", "dangerous tasks"]
    assert [len(ax.lines) for ax in fig.axes] == [2] * 6  # one line per attack in each panel
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["PDR", "Dark Triad score (12-108)", "invalid verdicts (share)"]
    assert list(fig.axes[1].lines[0].get_xdata()) == [0, 2, 3]


@pytest.mark.slow
def test_the_command_on_tiny_checkpoints_with_a_named_chat_template(run_dir, tmp_path):
    config = tmp_path / "tiny_sweep.py"
    config.write_text(
        "from agent_safety.run_config import default_config\n\n\n"
        "def get_config():\n"
        "    c = default_config()\n"
        "    c.backend.kind, c.backend.chat_template, c.backend.attention = 'jax', 'chatml', 'xla'\n"
        "    c.judge_backend.kind = 'same'\n"
        "    c.tasks.limit_per_kind, c.tasks.kinds = 1, ('safe',)\n"
        "    c.systems, c.attacks, c.rounds = ('autogen',), ('none',), 1\n"
        "    for s in (c.agent_sampling, c.questionnaire_sampling, c.judge_sampling):\n"
        "        s.max_tokens = 4\n"
        "    return c\n")
    (tmp_path / "run").symlink_to(run_dir / "checkpoints")
    cmd = [sys.executable, str(REPO / "tools/psysafe_checkpoints.py"), f"--config={config}", "--run_dir=run",
           "--out=out"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [f"out/{name}" for name in (TABLE_MD, TABLE_CSV, PLOT)]
    with open(tmp_path / "out" / TABLE_CSV) as f:
        table = list(csv.DictReader(f))
    # Random weights answer nothing validly: every verdict and questionnaire is invalid, none failed.
    assert [(r["step"], r["n"], r["failed"], r["invalid verdicts"]) for r in table] == [("2", "1", "0", "2"),
                                                                                      ("3", "1", "0", "2")]
