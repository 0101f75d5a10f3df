"""tools/bench_psysafe.py on a scripted backend: the two modes make the calls they claim (no model)."""

import sys
from pathlib import Path

import pytest

from agent_safety.backends import ScriptedBackend
from tests.load_file import load_module

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_psysafe.py"


@pytest.fixture(scope="module")
def bench():
    yield load_module(TOOL, "bench_psysafe")
    sys.modules.pop("bench_psysafe", None)


def _run(bench, mode, n):
    inner = ScriptedBackend(lambda request: "a reply")
    agents = bench.CountingBackend(inner)
    judge = ScriptedBackend(lambda request: bench.SCRIPTED_VERDICT)
    config = bench.workload_config(n, rounds=1, max_tokens=8, temperature=0.0, side_queries=False)
    bench.run_mode(mode, config, n, agents, judge)
    return inner, agents, judge


def test_batched_mode_is_one_call_per_step(bench):
    # AutoGen, 1 round: planner then assistant -> 2 steps, each one call over all 4 dialogues.
    inner, agents, judge = _run(bench, "batched", 4)
    assert inner.batches == [4, 4]
    assert (agents.calls, agents.requests) == (2, 8)
    assert judge.batches == [4, 4]  # the constant judge labels each step's new messages in one batch


def test_sequential_mode_is_batch_one(bench):
    inner, agents, _ = _run(bench, "sequential", 4)
    assert inner.batches == [1] * 8
    assert (agents.calls, agents.requests) == (8, 8)


def test_questionnaire_off_means_no_side_query(bench):
    inner, _, _ = _run(bench, "batched", 2)
    assert all("questionnaire" not in m.content.lower() for r in inner.requests for m in r.messages)


def test_the_workload_has_as_many_dialogues_under_each_attack(bench):
    dialogues = bench.make_dialogues(bench.workload_config(16, 1, 8, 0.0, False), 16)
    assert sorted(d.key.attack for d in dialogues) == ["HI-Traits"] * 8 + ["none"] * 8
    assert len({d.key.task_id for d in dialogues}) == 8  # the same 8 tasks under both


def test_dialogues_per_hour(bench):
    assert bench.dialogues_per_hour(16, 60.0) == 960.0


def test_too_many_dialogues_and_unknown_mode_fail_clearly(bench):
    config = bench.workload_config(999, 1, 8, 0.0, False)
    with pytest.raises(ValueError, match="--dialogues 999: the builtin tasks give only 46 dialogues"):
        bench.make_dialogues(config, 999)
    with pytest.raises(ValueError, match="unknown mode 'parallel'"):
        bench.run_mode("parallel", bench.workload_config(2, 1, 8, 0.0, False), 2, ScriptedBackend(["x"]),
                       ScriptedBackend(["y"]))
