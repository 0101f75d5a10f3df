"""Memory-bounded rollouts (issue 18, item 1) and bounded packed shapes (item 6): the calls a step makes, their
seeds, the trainer's sequences per call against tools/memory_plan.py's on every preset, and the length ladder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.config import get_preset
from common.config_file import load_config
from common.mesh_presets import PRESETS, SIZES
from common.rollout import Rollout, SampleOutput
from rl_scaling.grpo.rollout import (Rollouts, call_seed, pack_rollouts, padded_length, rollout_calls,
                                     sample_rollouts)
from rl_scaling.grpo.setup import sequences_per_call
from tests.multiprocess import REPO_ROOT

RECIPE = "configs/grpo/qwen2_5_7b.py"  # the paper recipe; the plan takes each size's model from its preset


# ---- the calls of a step -------------------------------------------------------------------------------------

def test_calls_hold_whole_prompt_groups():
    assert rollout_calls(6, 8, 16) == [(0, 16), (16, 32), (32, 48)]
    assert rollout_calls(6, 8, 20) == [(0, 16), (16, 32), (32, 48)]  # 2 whole groups fit in 20
    assert rollout_calls(6, 8, 0) == rollout_calls(6, 8, 48) == rollout_calls(6, 8, 4096) == [(0, 48)]
    assert rollout_calls(2, 8, 4) == [(0, 4), (4, 8), (8, 12), (12, 16)]  # a group bigger than a call: split


def test_call_seeds_keep_the_first_call_and_differ_elsewhere():
    assert call_seed(1234, 0) == 1234
    seeds = {call_seed(1234, lo) for lo in range(0, 4096, 256)}
    assert len(seeds) == 16 and all(0 <= s < 2**31 - 1 for s in seeds)
    assert call_seed(1234, 256) == call_seed(1234, 256) != call_seed(1235, 256)


class RecordingRollout(Rollout):
    """Answers each prompt with [seed % 100, index in its call]; records each call's prompts and seed."""

    def __init__(self):
        self.calls = []

    def generate(self, params, prompt_ids, *, max_new_tokens, temperature=0.0, top_k=0, top_p=1.0, seed=0,
                 stop_token_ids=()):
        self.calls.append((list(prompt_ids), seed))
        n = len(prompt_ids)
        return SampleOutput([[seed % 100, i] for i in range(n)], [[-1.0, -2.0]] * n,
                            ["length" if i % 2 else "stop" for i in range(n)])


def _sample(rollout, prompts, per_call, seed=7):
    return sample_rollouts(rollout, None, prompts, group_size=4, max_new_tokens=2, temperature=1.0, top_p=1.0,
                           top_k=0, seed=seed, stop_token_ids=[0], sequences_per_call=per_call)


def test_sample_rollouts_in_calls_keeps_group_order():
    prompts = [[p] for p in range(1, 7)]  # 6 prompts x G=4 = 24 sequences, calls of 8 = 2 prompts
    recorder = RecordingRollout()
    r = _sample(recorder, prompts, 8)
    assert r.calls == 3 and [len(c) for c, _ in recorder.calls] == [8, 8, 8]
    assert [c for c, _ in recorder.calls][1] == [[3]] * 4 + [[4]] * 4  # whole groups, in order
    assert [s for _, s in recorder.calls] == [call_seed(7, 0), call_seed(7, 8), call_seed(7, 16)]
    assert r.prompt_ids == [p for p in prompts for _ in range(4)]
    assert len(r.response_ids) == len(r.sampler_logprobs) == len(r.truncated) == 24
    assert [ids[1] for ids in r.response_ids] == list(range(8)) * 3  # each call's outputs, in call order
    assert r.truncated.tolist() == [bool(i % 2) for i in range(8)] * 3
    one = _sample(RecordingRollout(), prompts, 0)  # one call: the step's seed, as before chunking
    assert one.calls == 1 and one.response_ids[:8] == r.response_ids[:8]


# ---- the trainer and the plan agree on every preset ----------------------------------------------------------

@pytest.fixture(scope="module")
def plan_rows(tmp_path_factory):
    """tools/memory_plan.py --no-compile for every size on every preset: the rows it writes, by (size, preset)."""
    cache = tmp_path_factory.mktemp("plan")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "tools/memory_plan.py", f"--config={RECIPE}", "--no-compile",
                          "--sizes=all", f"--presets={','.join(PRESETS)}", f"--cache-dir={cache}",
                          f"--out={cache / 'plan.md'}"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(p.read_text()) for p in cache.glob("row__*.json")]
    return {(r["size"], r["preset"]): r for r in rows}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_trainer_and_memory_plan_agree_on_sequences_per_call(preset, plan_rows):
    """The number the trainer computes at start (with the slice's HBM as its device's memory) is the number
    the plan reports and compiles, for every size on every slice (the recommended ones and the GPU hosts)."""
    p = PRESETS[preset]
    cfg = load_config(REPO_ROOT / RECIPE)
    cfg.model.dtype = "bfloat16"  # as the plan runs it (tools/memory_plan.plan_config); the recipe's already
    for size in SIZES:
        chunk, source = sequences_per_call(cfg, get_preset(size), p.degrees(size), p.hbm_bytes)
        row = plan_rows[(size, preset)]
        assert row["rollout_chunk"] == chunk, (size, preset, source)
        assert chunk <= row["rollout_batch"] == 4096
        assert chunk == 4096 or chunk & (chunk - 1) == 0  # a power of two: whole groups of 8, one batch bucket


def test_chunks_by_hand_for_the_recipe():
    """Pinned numbers (the recipe: prompts 2048, responses 4096, bfloat16 reference): a change to the
    estimator shows here first."""
    cfg = load_config(REPO_ROOT / RECIPE)
    got = {(size, preset): sequences_per_call(cfg, get_preset(size), PRESETS[preset].degrees(size),
                                              PRESETS[preset].hbm_bytes)[0]
           for size, preset in [("qwen2_5_0_5b", "1xh100"), ("qwen2_5_7b", "v5p-64"), ("qwen2_5_7b", "8xh100")]}
    assert got == {("qwen2_5_0_5b", "1xh100"): 128, ("qwen2_5_7b", "v5p-64"): 1024, ("qwen2_5_7b", "8xh100"): 256}


def test_sequences_per_call_overrides_and_cpu():
    cfg = load_config(REPO_ROOT / RECIPE)
    model, degrees = get_preset("qwen2_5_0_5b"), (1, 1, 1)
    n, why = sequences_per_call(cfg, model, degrees, None)
    assert n == 4096 and "no memory limit" in why  # a CPU: one call, and the reason is said
    full = sequences_per_call(cfg, model, degrees, 80 * 2**30)[0]
    cfg.grpo.rollout_memory_gib = 40.0  # overrides the device's memory, and bounds a CPU run too
    half, why = sequences_per_call(cfg, model, degrees, None)
    assert 0 < half < full and "grpo.rollout_memory_gib=40" in why
    assert sequences_per_call(cfg, model, degrees, 80 * 2**30)[0] == half
    cfg.grpo.rollout_batch = 96
    assert sequences_per_call(cfg, model, degrees, 80 * 2**30) == (96, "grpo.rollout_batch")


# ---- padded lengths from a fixed ladder ------------------------------------------------------------------------

def test_padded_lengths_come_from_a_ladder():
    assert [padded_length(n, 16) for n in (1, 16, 17, 33, 100, 129)] == [16, 16, 32, 64, 128, 256]
    assert padded_length(3000, 128, 4096) == 4096 and padded_length(2100, 128, 2048) == 2100  # never below n
    assert padded_length(1, 16, 1) == 1  # one-token responses stay one token
    halves = [padded_length(n, 16, halves=True) for n in (1, 17, 25, 33, 49, 70, 97, 129, 200)]
    assert halves == [16, 24, 32, 48, 64, 96, 128, 192, 256]
    assert padded_length(3000, 128, 4096, halves=True) == 3072 and padded_length(4000, 128, 4096, True) == 4096


def test_packed_shapes_are_bounded():
    """Random prompt lengths up to 2048 and response lengths up to 4096 over 200 steps meet at most 5 x 6
    (P, R) shapes with the recipe's ladder from 128."""
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(200):
        prompts = [[1] * int(rng.integers(1, 2049)) for _ in range(2)]
        responses = [[2] * int(rng.integers(1, 4097)) for _ in range(2)]
        r = Rollouts(prompts, responses, [[0.0] * len(x) for x in responses], np.zeros(2, bool), 2)
        b = pack_rollouts(r, pad_id=0, mask_truncated=False, min_bucket=128, max_prompt_len=2048,
                          max_response_len=4096)
        shapes.add((b.prompt_len, b.response_len))
    assert shapes <= {(128 * 2**i, 128 * 2**j) for i in range(5) for j in range(6)}
