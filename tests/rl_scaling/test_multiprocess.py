"""GRPO as a multi-host job: 2 processes x 4 fake CPU devices (gloo collectives) run the tiny config, save,
stop, and resume; every step's rewards and losses equal those of one process with 8 devices and the same
seed, and so do the saved parameters. A preemption notice (SIGTERM) that reaches one process only stops both
after the same step, with that step saved, and the resumed run is the run without the notice, exactly. About
two minutes on 2 cores (six process launches and one in-process run)."""

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from common.checkpoint.orbax_io import load_checkpoint
from common.metrics_writer import read_metrics
from rl_scaling.grpo.checkpoints import step_dirs
from tests.multiprocess import run_processes

WORKER = Path(__file__).with_name("grpo_worker.py")
FIRST, TOTAL = 4, 6  # the two-process job stops after step 4 and is restarted to step 6
PREEMPTED = 3  # process 1 alone gets SIGTERM during step 3
# Sampled data must agree exactly. Losses agree up to float32 summation order (gloo vs in-process all-reduce):
# the loss is a sum of O(1) terms that nearly cancel (advantages have mean 0), so the tolerance is absolute.
EXACT = ("reward/mean", "reward/std", "response/length_mean", "tokens/step", "train/response_tokens", "C", "D")
CLOSE = ("train/loss", "train/policy_loss", "train/entropy", "train/grad_norm", "train/ratio_mean")


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    """The reference: one process, 8 devices (tests/conftest.py), steps 1..6 without a restart."""
    from rl_scaling.grpo.trainer import GRPOTrainer
    from tests.load_file import load_module

    worker = load_module(WORKER, "grpo_worker")
    assert jax.device_count() == 8
    workdir = tmp_path_factory.mktemp("one_process")
    GRPOTrainer(worker.worker_config(TOTAL), workdir).train()
    return workdir


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two_processes")
    first = run_processes(WORKER, [str(workdir), str(FIRST)], num_processes=2, devices_per_process=4)
    assert [step_dir.name for step_dir in step_dirs(workdir)] == ["step_00000002", "step_00000004"]
    second = run_processes(WORKER, [str(workdir), str(TOTAL)], num_processes=2, devices_per_process=4)
    return workdir, first, second


def _by_step(workdir):
    return {r["step"]: r for r in read_metrics(workdir)}


def test_two_processes_form_one_eight_device_job(two_process_run):
    _, first, second = two_process_run
    for outputs, step in ((first, FIRST), (second, TOTAL)):
        assert "process 0/2 devices=8 step=%d" % step in outputs[0]
        assert "process 1/2 devices=8 step=%d" % step in outputs[1]
    assert "resumed from" in second[0] and "step 4" in second[0]


def test_only_process_zero_writes_metrics_and_every_step_appears_once(two_process_run):
    workdir, _, _ = two_process_run
    steps = [r["step"] for r in read_metrics(workdir)]
    assert steps == list(range(TOTAL + 1))  # step 0 = the evaluation before training; resume rewrote nothing twice
    assert (workdir / "DONE").read_text().strip() == str(TOTAL)


def test_rewards_and_losses_equal_the_single_process_run(two_process_run, single_process_run):
    two, one = _by_step(two_process_run[0]), _by_step(single_process_run)
    assert set(range(1, TOTAL + 1)) <= set(two) and set(range(1, TOTAL + 1)) <= set(one)
    for step in range(1, TOTAL + 1):
        for key in EXACT:
            assert two[step][key] == one[step][key], (step, key, two[step][key], one[step][key])
        for key in CLOSE:  # from step 2 on, through parameters that carry Adam's noise (below)
            a, b = two[step][key], one[step][key]
            assert math.isclose(a, b, rel_tol=3e-4, abs_tol=2e-5), (step, key, a, b)
    # the run learns something: not a comparison of two constant streams
    assert len({one[s]["reward/mean"] for s in range(1, TOTAL + 1)}) > 1


def _param_leaves(step_dir) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(load_checkpoint(step_dir))]


def test_saved_parameters_equal_the_single_process_run(two_process_run, single_process_run):
    two = _param_leaves(step_dirs(two_process_run[0])[-1])
    one = _param_leaves(step_dirs(single_process_run)[-1])
    assert len(two) == len(one) > 0
    # Adam turns the summation-order noise of near-zero gradients into update noise, a few elements the most: a
    # gradient that is ~0 in both runs can take opposite signs, and each run then moves that element by up to lr
    # (3e-3). Measured 2026-12-06 (responses packed to their 1 token): median 1.6e-5, 99 % 1.6e-4, 99.9 % 5.0e-4,
    # largest 3.3e-3. So: 99 % of elements within a tenth of one step's update, 99.9 % within a third, none beyond
    # the two opposite steps of a sign flip; a wrong shard or a lost update would move most elements by whole steps.
    diff = np.concatenate([np.abs(x - y).ravel() for x, y in zip(two, one)])
    quantiles = {q: float(np.quantile(diff, q)) for q in (0.99, 0.999)}
    assert quantiles[0.99] <= 3e-4 and quantiles[0.999] <= 1e-3 and diff.max() <= 6e-3, (quantiles, diff.max())
    # ... and two steps of training are far outside both bounds: the comparison can fail.
    earlier = _param_leaves(step_dirs(single_process_run)[-2])
    steps = np.concatenate([np.abs(x - y).ravel() for x, y in zip(earlier, one)])
    assert np.median(steps) > 3 * 3e-4 and steps.max() > 10 * 1e-3


# ---- a preemption notice that reaches one host ----------------------------------------------------------------

@pytest.fixture(scope="module")
def preempted_run(tmp_path_factory):
    """2 processes to TOTAL steps, process 1 alone signalled during step PREEMPTED; then the same command again.
    The run directory starts with a killed save of each kind (the `.partial` of the code before orbax's manager,
    and orbax's temporary directory)."""
    workdir = tmp_path_factory.mktemp("preempted")
    for name in ("step_00000001.partial", "step_00000009.orbax-checkpoint-tmp"):
        (workdir / "checkpoints" / name / "params").mkdir(parents=True)
    first = run_processes(WORKER, [str(workdir), str(TOTAL), f"--sigterm={PREEMPTED}:1"], num_processes=2,
                          devices_per_process=4)
    saved = {p.name: json.loads((p / "trainer_state.json").read_text())["step"] for p in step_dirs(workdir)}
    second = run_processes(WORKER, [str(workdir), str(TOTAL)], num_processes=2, devices_per_process=4)
    return workdir, first, saved, second


def test_sigterm_on_one_process_stops_both_after_the_same_step_saved(preempted_run):
    _, first, saved, second = preempted_run  # run_processes checked that every process exited 0
    assert "signal 15" in first[1] and "signal 15" not in first[0]
    for i, out in enumerate(first):
        assert f"process {i}/2 devices=8 step={PREEMPTED}" in out
    assert saved == {"step_00000002": 2, "step_00000003": PREEMPTED}  # the periodic save and the preemption's
    assert f"step_{PREEMPTED:08d} (step {PREEMPTED})" in second[0]
    for i, out in enumerate(second):
        assert f"process {i}/2 devices=8 step={TOTAL}" in out


def test_unfinished_saves_are_removed_by_process_zero_alone(preempted_run):
    workdir, first, _, _ = preempted_run
    assert sorted(line.rsplit("/", 1)[1] for line in first[0].splitlines()
                  if line.startswith("removed the unfinished save")) == ["step_00000001.partial",
                                                                         "step_00000009.orbax-checkpoint-tmp"]
    assert "removed the unfinished save" not in first[1]
    # nothing else is left: the resumed run saved steps 4 and 6 (every=2) and kept those two (keep=2)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]


def test_the_preempted_run_resumed_equals_the_run_without_preemption(preempted_run, two_process_run):
    preempted, reference = _by_step(preempted_run[0]), _by_step(two_process_run[0])
    assert sorted(preempted) == list(range(TOTAL + 1))
    for step in range(TOTAL + 1):  # every key of every step, bit for bit (the reference also evaluated at step 4)
        for key, value in preempted[step].items():
            if not key.startswith(("time/", "tokens/per_second")):
                assert value == reference[step][key], (step, key, value, reference[step][key])
    for a, b in zip(_param_leaves(step_dirs(preempted_run[0])[-1]), _param_leaves(step_dirs(two_process_run[0])[-1]),
                    strict=True):
        np.testing.assert_array_equal(a, b)
