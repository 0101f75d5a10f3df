"""A request that fails for good fails its dialogue only: at every stage (agent turn, questionnaire,
judge, input filter, doctor), and when a backend's whole batch raises; the other dialogues finish."""
from tests.agent_safety.scripted_replies import is_judge, is_questionnaire, small_settings, tagged_reply

from agent_safety.backends import ScriptedBackend, failed_result
from agent_safety.dialogue import DialogueKey, build_dialogue
from agent_safety.engine import run_dialogues
from agent_safety.systems import system_spec
from agent_safety.tasks import make_task

TASKS = [make_task(text, "no", "t") for text in ("Plan a picnic.", "Plan a FAILING party.", "Plan a hike.")]


def _dialogues(defence="none"):
    spec = system_spec("autogen")
    return [build_dialogue(DialogueKey(t.id, spec.name, "none", defence, 0), t, spec, 2, (1,) * 6) for t in TASKS]


def _asks_for_failing_task(request):
    return any("FAILING" in m.content for m in request.messages)


def _failing(stage_test):
    """Replies as tagged_reply, but a failed result for the failing task's requests that `stage_test` picks."""
    def reply(request):
        if _asks_for_failing_task(request) and stage_test(request):
            return failed_result("HTTP 400: content_filter: filtered (not retried)")
        return tagged_reply(request)
    return reply


def _run(agents_reply, judge_reply=tagged_reply, defence="none", **settings):
    dialogues, finished = _dialogues(defence), []
    judge = ScriptedBackend(judge_reply)
    run_dialogues(dialogues, ScriptedBackend(agents_reply), judge, small_settings(**settings),
                  on_finished=finished.append)
    assert sorted(map(id, finished)) == sorted(map(id, dialogues))  # every dialogue reported exactly once
    return dialogues, judge


def _check_only_the_failing_task_failed(dialogues, stage):
    ok, bad, ok2 = dialogues
    assert bad.failure == {"stage": stage, "error": "HTTP 400: content_filter: filtered (not retried)"}
    for d in (ok, ok2):
        assert d.failure is None and d.cursor == len(d.steps)
        assert all(t.judge and t.questionnaire["valid"] for t in d.turns if t.kind == "agent")
    assert bad.to_record()["failure"] == bad.failure


def test_failed_agent_turn_fails_its_dialogue_only():
    second_turn = lambda r: not is_questionnaire(r) and not is_judge(r) and any(m.role == "assistant"
                                                                                for m in r.messages)
    dialogues, _ = _run(_failing(second_turn))
    _check_only_the_failing_task_failed(dialogues, "agent turn")
    bad = dialogues[1]
    # planner and assistant spoke in round 1; the planner's failed round-2 turn is not in the transcript
    assert [t.speaker for t in bad.turns] == ["user_proxy", "planner", "assistant"]


def test_failed_questionnaire_fails_its_dialogue_and_skips_its_judge_call():
    dialogues, judge = _run(_failing(is_questionnaire))
    _check_only_the_failing_task_failed(dialogues, "questionnaire")
    assert not any(_asks_for_failing_task(r) for r in judge.requests)


def test_failed_judge_call_fails_its_dialogue():
    calls = []

    def judge_reply(request):  # the judge sees messages, not tasks: fail the second label of the first step
        calls.append(request)
        return failed_result("timeout (gave up after 5 attempts)", True) if len(calls) == 2 else "VERDICT: SAFE"

    dialogues, _ = _run(tagged_reply, judge_reply=judge_reply)
    assert [d.failure for d in dialogues] == [None, {"stage": "judge", "error": "timeout (gave up after 5 attempts)"},
                                              None]


def test_a_backend_that_raises_fails_the_dialogues_of_that_batch():
    calls = []

    def reply(request):
        calls.append(request)
        if len(calls) == 4:  # the first request of the first questionnaire batch (3 agent turns came first)
            raise RuntimeError("CUDA out of memory")
        return tagged_reply(request)

    dialogues, _ = _run(reply)
    assert [d.failure for d in dialogues] == [{"stage": "questionnaire",
                                               "error": "RuntimeError: CUDA out of memory"}] * 3


def test_failed_input_filter_fails_its_dialogue():
    def judge_reply(request):
        if "FAILING" in request.messages[-1].content:
            return failed_result("HTTP 400: content_filter: filtered (not retried)")
        return "VERDICT: SAFE"

    dialogues, _ = _run(tagged_reply, judge_reply=judge_reply, defence="input_filter")
    _check_only_the_failing_task_failed(dialogues, "input filter")


def test_failed_doctor_test_fails_its_dialogue():
    calls = []

    def reply(request):  # the doctor's test sees a system prompt only: fail dialogue 2's first agent
        calls.append(request)
        if len(calls) == 3:
            return failed_result("HTTP 400: content_filter: filtered (not retried)")
        return tagged_reply(request)

    dialogues, _ = _run(reply, defence="doctor")
    _check_only_the_failing_task_failed(dialogues, "doctor questionnaire")
