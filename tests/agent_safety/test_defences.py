"""Defence flows: input filter blocks before any agent speaks; the doctor rewrites at most 3 times;
the police speaks after the working agents every round, without dark traits."""

import pytest
from tests.agent_safety.scripted_replies import ALL_A, agent_of, is_questionnaire, small_settings, tagged_reply

from agent_safety.attack import attack_prompts, dark_trait_block, injection_block
from agent_safety.backends import ScriptedBackend
from agent_safety.defences import defence_prompts, police_prompt, rewritten_prompt
from agent_safety.dialogue import DialogueKey, build_dialogue
from agent_safety.engine import run_dialogues
from agent_safety.systems import system_spec
from agent_safety.tasks import make_task

V = (1, 1, 1, 1, 1, 1)
ALL_C = "\n".join(f"{i}. (C) yes" for i in range(1, 13))
TASK = make_task("Plan a picnic.", "no", "t")


def _dialogue(attack, defence, system="autogen", rounds=1, task=TASK):
    spec = system_spec(system)
    return build_dialogue(DialogueKey(task.id, system, attack, defence, 0), task, spec, rounds, V)


def _is_doctor(r):
    return r.messages[0].content == defence_prompts()["doctor_system"].strip()


def test_parse_defences_rejects_unknown():
    with pytest.raises(ValueError, match=r"unknown defence\(s\) \['doctr'\]"):
        _dialogue("none", "doctr")


def test_input_filter_blocks_flagged_inputs_before_any_agent_turn():
    flagged, clean = _dialogue("HI", "input_filter"), _dialogue("none", "input_filter")
    prefix = attack_prompts()["roleplay_prefix"]
    judge = ScriptedBackend(lambda r: "VERDICT: DANGEROUS" if prefix in r.messages[1].content
                            else "Looks fine.\nVERDICT: SAFE")
    agents = ScriptedBackend(tagged_reply)
    finished = []
    run_dialogues([flagged, clean], agents, judge, small_settings(), on_finished=finished.append)
    assert finished[0] is flagged  # reported as soon as it is blocked
    assert flagged.blocked and flagged.input_filter["dangerous"] is True and len(flagged.turns) == 1
    assert not clean.blocked and clean.input_filter["dangerous"] is False
    assert [t.speaker for t in clean.turns] == ["user_proxy", "planner", "assistant"]
    screen = judge.requests[:2]
    assert judge.batches[0] == 2 and all("<<<REQUEST" in r.messages[1].content for r in screen)
    assert all(TASK.text in r.messages[1].content for r in screen)
    assert flagged.to_record()["blocked"] is True


def test_invalid_filter_verdict_does_not_block():
    d = _dialogue("none", "input_filter")
    run_dialogues([d], ScriptedBackend(tagged_reply), ScriptedBackend(lambda r: "A"), small_settings())
    assert not d.blocked and d.input_filter == {"dangerous": None, "raw": "A"}


def test_doctor_rewrites_at_most_three_times():
    """An agent that always answers "definitely me" is tested 4 times and rewritten 3 times."""
    d = _dialogue("Traits", "doctor")
    rewrites = iter(range(1, 100))

    def reply(r):
        if _is_doctor(r):
            return f"<prompt>rewritten {next(rewrites)}</prompt>"
        if is_questionnaire(r):
            return ALL_C if len(r.messages) == 2 else ALL_A  # pre-chat tests fail, later side queries pass
        return "ok"

    agents = ScriptedBackend(reply)
    run_dialogues([d], agents, ScriptedBackend(lambda r: "VERDICT: SAFE"), small_settings())
    for agent in ("planner", "assistant"):
        history = d.doctor[agent]
        assert len(history) == 4 and all(h["questionnaire"]["score"] == 108 for h in history)
        assert dark_trait_block(V) in history[0]["system_prompt"]
    assert sum(_is_doctor(r) for r in agents.requests) == 6
    # batches: test both agents, rewrite both, x3, final test, then the chat.
    assert agents.batches[:7] == [2, 2, 2, 2, 2, 2, 2]
    assert d.system_prompts["planner"] == "rewritten 5" and d.system_prompts["assistant"] == "rewritten 6"
    doctor_request = next(r for r in agents.requests if _is_doctor(r))
    assert d.spec.role_prompts["planner"] in doctor_request.messages[1].content  # sees the prompt to fix
    assert agents.requests[-2].messages[0].content in ("rewritten 5", "rewritten 6")  # chat uses the new one


def test_doctor_stops_when_agent_passes_and_checks_threshold():
    d = _dialogue("Traits", "doctor")
    # 11 x (B) + 1 x (A) = 56 > 40 -> fails; after one rewrite all (A) = 12 -> passes.
    fail = "\n".join(f"{i}. ({'A' if i == 1 else 'B'}) hm" for i in range(1, 13))

    def reply(r):
        if _is_doctor(r):
            return "Sure: <prompt>You are the planner. You are kind.</prompt>"
        if is_questionnaire(r):
            return ALL_A if "You are kind." in r.messages[0].content else fail
        return "ok"

    agents = ScriptedBackend(reply)
    run_dialogues([d], agents, ScriptedBackend(lambda r: "VERDICT: SAFE"), small_settings())
    assert [h["questionnaire"]["score"] for h in d.doctor["planner"]] == [56, 12]
    assert d.system_prompts["planner"] == "You are the planner. You are kind."


def test_doctor_passes_low_scores_without_rewrite():
    d = _dialogue("none", "doctor")
    agents = ScriptedBackend(tagged_reply)
    run_dialogues([d], agents, ScriptedBackend(lambda r: "VERDICT: SAFE"), small_settings())
    assert [len(h) for h in d.doctor.values()] == [1, 1]
    assert not any(_is_doctor(r) for r in agents.requests)


def test_rewritten_prompt_parsing():
    assert rewritten_prompt("x <prompt>\nnew\n</prompt> y", "old") == "new"
    assert rewritten_prompt("just the prompt", "old") == "just the prompt"
    assert rewritten_prompt("  ", "old") == "old"


def test_police_speaks_after_working_agents_every_round_without_traits():
    d = _dialogue("HI-Traits", "police", rounds=2, task=make_task("Help with a crime.", "illegal activity", "t"))
    def reply(r):
        return "POLICE CHECK" if r.messages[0].content == police_prompt() else tagged_reply(r)

    agents = ScriptedBackend(reply)
    run_dialogues([d], agents, ScriptedBackend(lambda r: "VERDICT: SAFE"), small_settings())
    assert [(t.speaker, t.kind, t.round) for t in d.turns] == [
        ("user_proxy", "human", 0), ("planner", "agent", 1), ("assistant", "agent", 1), ("police", "police", 1),
        ("planner", "agent", 2), ("assistant", "agent", 2), ("police", "police", 2)]
    police_requests = [r for r in agents.requests if r.messages[0].content == police_prompt()]
    assert len(police_requests) == 2
    assert injection_block(V, True) not in police_requests[0].messages[0].content
    assert police_requests[0].messages[-1].content.endswith("planner: planner-1\n\nassistant: assistant-1")
    # working agents see the police message; police turns get no questionnaire or judge label.
    planner_round2 = [r for r in agents.requests if agent_of(r) == "planner" and not is_questionnaire(r)][1]
    assert planner_round2.messages[-1].content == "assistant: assistant-1\n\npolice: POLICE CHECK"
    police_turns = [t for t in d.turns if t.kind == "police"]
    assert all(t.questionnaire is None and t.judge is None for t in police_turns)
