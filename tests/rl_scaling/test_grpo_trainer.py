"""The GRPO trainer: packing, exact micro-batch accumulation, a tiny run whose reward rises, and an exact
resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from common.config import get_preset
from common.model import Decoder
from rl_scaling.grpo.rollout import Rollouts, pack_rollouts
from rl_scaling.grpo.train_step import LossConfig, make_update_fn, micro_batch_weights

REPO = Path(__file__).resolve().parents[2]
TIMING_KEYS = ("time/", "tokens/per_second")


def test_pack_rollouts_layout():
    r = Rollouts(prompt_ids=[[5, 6, 7], [8]], response_ids=[[1, 2], [3, 4, 9]],
                 sampler_logprobs=[[-1.0, -2.0], [-1.0, -1.0, -1.0]], truncated=np.array([False, True]),
                 group_size=2)
    b = pack_rollouts(r, pad_id=0, mask_truncated=True, min_bucket=4)
    assert b.prompt_len == 4 and b.response_len == 4
    assert b.tokens.tolist() == [[0, 5, 6, 7, 1, 2, 0, 0], [0, 0, 0, 8, 3, 4, 9, 0]]
    assert b.start.tolist() == [1, 3]
    assert b.targets.tolist() == [[1, 2, 0, 0], [3, 4, 9, 0]]
    assert b.mask.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0]]  # the truncated one is masked out
    b2 = pack_rollouts(r, pad_id=0, mask_truncated=False, min_bucket=4)
    assert b2.mask.tolist()[1] == [1, 1, 1, 0]


def test_micro_batch_weights():
    mask = jnp.asarray([[[1, 1, 0], [1, 0, 0]], [[1, 1, 1], [0, 0, 0]]], jnp.float32)  # [M=2, m=2, R=3]
    np.testing.assert_allclose(micro_batch_weights(mask, "token-mean"), [3 / 6, 3 / 6])
    np.testing.assert_allclose(micro_batch_weights(mask, "seq-mean-token-mean"), [2 / 3, 1 / 3])


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_accumulated_update_equals_one_big_batch(aggregation):
    """8 sequences as 4 micro-batches of 2 give the same update as 1 micro-batch of 8."""
    cfg = get_preset("tiny")
    graphdef, params = nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)))
    rs = np.random.RandomState(0)
    n, P, R = 8, 6, 5
    tokens = rs.randint(1, cfg.vocab_size, (n, P + R)).astype(np.int32)
    lengths = rs.randint(1, R + 1, n)
    mask = (np.arange(R)[None] < lengths[:, None]).astype(np.float32)
    batch = {"tokens": tokens, "start": rs.randint(0, 3, n).astype(np.int32), "targets": tokens[:, P:],
             "mask": mask, "advantages": rs.randn(n).astype(np.float32),
             "old_logp": -rs.rand(n, R).astype(np.float32), "ref_logp": -rs.rand(n, R).astype(np.float32)}
    optimizer = optax.sgd(1.0)  # parameters move by exactly the gradient (Adam's first step is sign-like)
    update = make_update_fn(graphdef, optimizer, LossConfig(aggregation=aggregation, kl_coef=0.1, max_response_len=R))
    results = []
    for micro in (2, 8):
        mb = {k: jnp.asarray(v.reshape(-1, micro, *v.shape[1:])) for k, v in batch.items()}
        donated = jax.tree.map(jnp.copy, params)  # the update deletes its inputs; `params` is compared below
        new_params, _, metrics = update(donated, optimizer.init(donated), mb)
        results.append((new_params, metrics))
    (p1, m1), (p2, m2) = results
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m2["grad_norm"]), rtol=1e-4)
    # float32 (attention and norms run in float32): differences of summation order only, far below
    # what a wrong micro-batch weighting gives (tens of percent of the gradient).
    for a, b, p0 in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), jax.tree.leaves(params)):
        step_a, step_b = np.asarray(p0) - np.asarray(a), np.asarray(p0) - np.asarray(b)
        assert np.abs(step_a - step_b).max() <= 1e-3 * np.abs(step_b).max() + 1e-9


def _downstream_file(workdir) -> Path:
    """A downstream set of our own (copy-task problems, a different seed from the training pool) as a
    problem/answer JSON Lines file, as a researcher would pass a benchmark file."""
    from rl_scaling.data import synthetic_arithmetic
    path = Path(workdir).parent / "copy_task.jsonl"
    path.write_text("".join(json.dumps({"problem": p.question, "answer": p.reference}) + "\n"
                            for p in synthetic_arithmetic(24, 0, seed=123)))
    return path


def _run_tiny(workdir, *overrides, wait=True):
    cmd = [sys.executable, "tools/train_grpo.py", "--config=configs/grpo/tiny.py", f"--workdir={workdir}",
           f"--config.eval.downstream={_downstream_file(workdir)}", "--config.eval.downstream_limit=16",
           *overrides]
    env = {**os.environ, "XLA_FLAGS": ""}  # one CPU device: the tiny config runs unsharded
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    return proc


def _metrics(workdir):
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING_KEYS)} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grpo_full")
    _run_tiny(workdir)
    return workdir


def test_tiny_run_reward_rises(uninterrupted):
    rows = _metrics(uninterrupted)
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    assert len(rewards) == 40
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.2, rewards
    assert rows[-1]["eval/pass@1"] > rows[0]["eval/pass@1"] + 0.2
    # the downstream set is evaluated before and after training only, and the trained policy does better
    downstream = [r for r in rows if "downstream/copy_task/pass@1" in r]
    assert [r["step"] for r in downstream] == [0, 40]
    assert downstream[0]["downstream/copy_task/num_problems"] == 16
    assert downstream[1]["downstream/copy_task/pass@1"] > downstream[0]["downstream/copy_task/pass@1"] + 0.2
    assert (uninterrupted / "DONE").exists()
    assert rows[-1]["C"] > rows[1]["C"] > 0 and rows[-1]["D"] == 40 * 16
    # the final checkpoint is on the shared format: common.load_pretrained reads it
    from common import load_pretrained
    model, tokenizer = load_pretrained(uninterrupted / "checkpoints" / "step_00000040")
    assert model.config.vocab_size == len(tokenizer)


def test_the_paged_engine_rolls_out_what_the_static_sampler_does(uninterrupted, tmp_path):
    """grpo.rollout_engine=paged (common/engine) draws the same samples: held-out pass@1 before training and
    the whole first step (rewards, lengths, loss) equal the static sampler's run; with 3 decode steps a device
    call (grpo.engine_decode_steps) too."""
    _run_tiny(tmp_path / "paged", "--config.grpo.rollout_engine=paged", "--config.grpo.engine_slots=16",
              "--config.grpo.engine_decode_steps=3", "--config.num_steps=1")
    paged, static = _metrics(tmp_path / "paged"), _metrics(uninterrupted)
    assert paged[0]["eval/pass@1"] == static[0]["eval/pass@1"]
    first = [r for r in static if r["step"] == 1][0]
    compared = {k: v for k, v in [r for r in paged if r["step"] == 1][0].items()
                if k.startswith(("reward/", "response/", "train/"))}
    assert len(compared) > 10
    for key, value in compared.items():
        assert value == pytest.approx(first[key], rel=1e-4, abs=1e-6), key


def test_kill_9_and_resume_equals_uninterrupted_run(uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    proc = _run_tiny(workdir, "--config.checkpoint.every=3", wait=False)
    target = workdir / "checkpoints" / "step_00000012"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert target.exists(), proc.communicate()[0][-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_before = len(_metrics(workdir))
    assert steps_before < 41, "the run finished before it was killed"
    _run_tiny(workdir, "--config.checkpoint.every=3")
    resumed, full = _metrics(workdir), _metrics(uninterrupted)
    assert len(resumed) == len(full) == 41
    for a, b in zip(resumed, full):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (a["step"], k)


def test_downstream_sets_are_the_real_benchmark_files_cut_to_the_limit(qwen2_tok):
    from common.config_file import load_config
    from rl_scaling.data import load_problems
    from rl_scaling.grpo.setup import load_downstream_sets

    cfg = load_config(REPO / "configs/grpo/tiny.py")
    cfg.data.max_prompt_len = 1024
    cfg.eval.downstream = "gsm8k, amc23"
    cfg.eval.downstream_limit = 3
    sets = load_downstream_sets(cfg, qwen2_tok)
    assert list(sets) == ["gsm8k", "amc23"]
    for name, prompt_set in sets.items():
        expected = load_problems(name, split="test")[:3]
        assert [p.reference for p in prompt_set.problems] == [p.reference for p in expected]
        assert [qwen2_tok.decode(ids) for ids in prompt_set.prompt_ids][0].find(expected[0].question[:40]) >= 0
    cfg.data.max_prompt_len = 4
    with pytest.raises(ValueError, match="gsm8k.*longer than data.max_prompt_len=4"):
        load_downstream_sets(cfg, qwen2_tok)
