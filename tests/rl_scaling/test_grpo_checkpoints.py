"""GRPO step checkpoints of an older parameter layout: a clear error instead of an orbax tree mismatch."""

import json

import pytest

from rl_scaling.grpo.checkpoints import restore_trainer_checkpoint


def test_resume_from_first_layout_step_names_the_format(tmp_path):
    step = tmp_path / "checkpoints" / "step_00000004"
    (step / "params").mkdir(parents=True)
    (step / "metadata.json").write_text(json.dumps({"format": "qrr-checkpoint-v1", "step": 4}))
    with pytest.raises(ValueError, match="format 'qrr-checkpoint-v1'.*cannot resume"):
        restore_trainer_checkpoint(step, params=None, opt_state=None)
