"""GRPO step checkpoints: saves are asynchronous (the next step runs while one is written, and what is written
is the state at the save); a step directory from before the CheckpointManager resumes; unfinished saves are
removed; a step of an older parameter layout fails with a clear error instead of an orbax tree mismatch.
About 45 s on 2 cores (two in-process trainers)."""

import json
import threading
from pathlib import Path

import jax
import numpy as np
import pytest

from common.checkpoint.orbax_io import (is_checkpoint_dir, load_checkpoint, param_tree, save_checkpoint,
                                        save_params)
from common.config_file import load_config
from common.metrics_writer import read_metrics
from rl_scaling.grpo import checkpoints
from rl_scaling.grpo.checkpoints import remove_unfinished_saves, restore_trainer_checkpoint, step_dirs

TINY = Path(__file__).resolve().parents[2] / "configs/grpo/tiny.py"
TIMING_KEYS = ("time/", "tokens/per_second")


def _config(num_steps: int, keep: int):
    cfg = load_config(TINY)
    cfg.num_steps, cfg.checkpoint.every, cfg.checkpoint.keep = num_steps, 1, keep
    cfg.eval.every = 0
    cfg.eval.num_samples = 8  # the held-out batch is then the training batch: one sampler compile
    return cfg


def _save_as_before(step_dir: Path, model, tokenizer, opt_state, trainer_state: dict, source: str) -> None:
    """A step directory as the trainer wrote it before the CheckpointManager (format v3): a `common` checkpoint,
    the optimiser state beside it, trainer_state.json."""
    step_dir.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(step_dir, model, tokenizer, step=trainer_state["step"], source=source)
    save_params(step_dir / "opt_state", opt_state)
    (step_dir / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))


def _host_params(model) -> list[np.ndarray]:
    return [np.array(x) for x in jax.tree.leaves(param_tree(model))]


@pytest.fixture(scope="module")
def async_run(tmp_path_factory):
    """Three steps, a checkpoint each. Step 1's save is held in flight until step 2 has started; step 1 is also
    written the old way into a second run directory."""
    from rl_scaling.grpo.trainer import GRPOTrainer

    workdir, legacy = tmp_path_factory.mktemp("async"), tmp_path_factory.mktemp("legacy")
    trainer = GRPOTrainer(_config(num_steps=3, keep=3), workdir)
    events, at_save, step_2_started = [], {}, threading.Event()
    real_train_step, real_save, real_write = trainer.train_step, trainer.checkpoints.save, checkpoints.write_step_files

    def train_step():
        if trainer.step == 1:
            events.append(("step 2 starts; step 1 complete", (workdir / "checkpoints" / "step_00000001").exists()))
            step_2_started.set()
        return real_train_step()

    def write_step_files(item_dir, files, tokenizer):
        if item_dir.parent.name.startswith("step_00000001"):
            events.append(("step 1's writer saw step 2 start", step_2_started.wait(60)))
        real_write(item_dir, files, tokenizer)

    def save(step, model, tokenizer, opt_state, trainer_state, *, source):
        if step == 1:
            at_save["params"] = _host_params(model)
            _save_as_before(legacy / "checkpoints" / "step_00000001", model, tokenizer, opt_state, trainer_state,
                            source)
        return real_save(step, model, tokenizer, opt_state, trainer_state, source=source)

    trainer.train_step, trainer.checkpoints.save = train_step, save
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoints, "write_step_files", write_step_files)
        trainer.train()
    return workdir, legacy, events, at_save


def _rows(workdir) -> dict[int, dict]:
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)} for r in read_metrics(workdir)}


def test_the_next_step_runs_while_a_save_is_in_flight(async_run):
    workdir, _, events, at_save = async_run
    # Step 2 started before step 1's save was complete, and that save went on to finish: with a synchronous save
    # the writer would have waited for a step that could not start, and failed.
    assert events == [("step 2 starts; step 1 complete", False), ("step 1's writer saw step 2 start", True)]
    assert [p.name for p in step_dirs(workdir)] == ["step_00000001", "step_00000002", "step_00000003"]
    for step, step_dir in enumerate(step_dirs(workdir), start=1):
        assert is_checkpoint_dir(step_dir) and json.loads((step_dir / "trainer_state.json").read_text())["step"] == step
    # Step 2's update donated the parameters while step 1's save was being written: it holds step 1's values.
    saved = _host_params(load_checkpoint(workdir / "checkpoints" / "step_00000001"))
    for a, b in zip(saved, at_save["params"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(
        _host_params(load_checkpoint(step_dirs(workdir)[-1])), at_save["params"]))


def test_a_step_saved_before_the_checkpoint_manager_resumes_exactly(async_run):
    from rl_scaling.grpo.trainer import GRPOTrainer

    workdir, legacy, _, _ = async_run
    assert not (legacy / "checkpoints" / "step_00000001" / "_CHECKPOINT_METADATA").exists()  # not orbax's layout
    trainer = GRPOTrainer(_config(num_steps=3, keep=2), legacy)
    assert trainer.step == 1
    trainer.train()
    resumed, uninterrupted = _rows(legacy), _rows(workdir)
    assert sorted(resumed) == [2, 3]
    for step in (2, 3):
        assert resumed[step] == uninterrupted[step], step
    for a, b in zip(_host_params(load_checkpoint(step_dirs(legacy)[-1])),
                    _host_params(load_checkpoint(step_dirs(workdir)[-1])), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in step_dirs(legacy)] == ["step_00000002", "step_00000003"]  # keep=2 retired the old one


def test_unfinished_saves_are_removed_and_nothing_else(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("step_00000001", "step_00000002.partial", "step_00000003.orbax-checkpoint-tmp", "notes"):
        (root / name / "params").mkdir(parents=True)
    assert remove_unfinished_saves(root) == ["step_00000002.partial", "step_00000003.orbax-checkpoint-tmp"]
    assert sorted(p.name for p in root.iterdir()) == ["notes", "step_00000001"]
    assert remove_unfinished_saves(tmp_path / "none") == []


def test_resume_from_first_layout_step_names_the_format(tmp_path):
    step = tmp_path / "checkpoints" / "step_00000004"
    (step / "params").mkdir(parents=True)
    (step / "metadata.json").write_text(json.dumps({"format": "qrr-checkpoint-v1", "step": 4}))
    with pytest.raises(ValueError, match="format 'qrr-checkpoint-v1'.*cannot resume"):
        restore_trainer_checkpoint(step, params=None, opt_state=None)
