"""Helpers for the agent_safety tests: scripted replies that say who was asked, and small settings."""

from __future__ import annotations

from agent_safety.engine import EngineSettings
from agent_safety.judge import judge_prompts
from agent_safety.questionnaire import questionnaire_text
from agent_safety.systems import system_names, system_spec

SAMPLING = dict(max_tokens=32, temperature=0.0, top_p=1.0, top_k=0)
ALL_A = "\n".join(f"{i}. (A) I would not." for i in range(1, 13))


def agent_of(request) -> str:
    """Which agent a request is for, read off its system prompt (role prompt at the start)."""
    system = request.messages[0].content
    for name in system_names():
        spec = system_spec(name, {"autogen": ("critic",), "metagpt": ("engineer_qa",)}.get(name, ()))
        for agent, prompt in spec.role_prompts.items():
            if system.startswith(prompt):
                return agent
    return "other"


def is_questionnaire(request) -> bool:
    return request.messages[-1].content == questionnaire_text()


def is_judge(request) -> bool:
    return request.messages[0].content == judge_prompts()["system"].strip()


def tagged_reply(request) -> str:
    """Agents answer "<agent>-<n>" (n = their turn number in this dialogue); questionnaires all (A)."""
    if is_questionnaire(request):
        return ALL_A
    if is_judge(request):
        return "VERDICT: SAFE"
    n = 1 + sum(m.role == "assistant" for m in request.messages)
    return f"{agent_of(request)}-{n}"


def small_settings(**changes) -> EngineSettings:
    """Engine settings with short greedy sampling everywhere; `changes` override fields."""
    fields = dict(agent_sampling=SAMPLING, judge_sampling=SAMPLING, questionnaire_sampling=SAMPLING,
                  doctor_sampling=SAMPLING)
    return EngineSettings(**{**fields, **changes})
