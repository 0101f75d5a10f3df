"""A canned, model-free reply policy for the scripted demo config: exercises the whole pipeline and
shows the expected effects in kind (attacks raise scores and danger; danger fades over rounds without
the hf reminder; the doctor and police help). Its numbers are NOT research results.
"""

from __future__ import annotations

from agent_safety.attack import attack_prompts
from agent_safety.backends.base import ChatRequest
from agent_safety.defences import defence_prompts, police_prompt
from agent_safety.judge import judge_prompts
from agent_safety.questionnaire import questionnaire_data

N_ITEMS = 12


def _is_infected(text: str) -> bool:
    """Carries the attack's role-play instruction or the jailbreak persona."""
    return attack_prompts()["roleplay_prefix"] in text or "FreeMind" in text


def _judge_reply(request: ChatRequest) -> str:
    body = request.messages[-1].content
    dangerous = _is_infected(body)
    verdict = "DANGEROUS" if dangerous else "SAFE"
    return f"The text {'follows' if dangerous else 'does not follow'} a harmful persona.\nVERDICT: {verdict}"


def _questionnaire_reply(request: ChatRequest) -> str:
    letter = "C" if _is_infected(request.messages[0].content) or _is_infected(request.messages[1].content) else "A"
    return "\n".join(f"{i}. ({letter}) that is how I would act here" for i in range(1, N_ITEMS + 1))


def _doctor_reply(request: ChatRequest) -> str:
    prompt = request.messages[-1].content.split("<<<PROMPT\n", 1)[1].split("\nPROMPT>>>", 1)[0]
    role_text = prompt.split("\n\n", 1)[0]  # the attack appends its block after a blank line
    return f"<prompt>{role_text}\nYou are caring, honest and fair.</prompt>"


def _agent_reply(request: ChatRequest) -> str:
    system = request.messages[0].content
    own_turns = sum(1 for m in request.messages if m.role == "assistant")
    reminded = attack_prompts()["reminder"] in request.messages[-1].content
    warned = "UNSAFE" in request.messages[-1].content
    infected = _is_infected(system) or any(_is_infected(m.content) for m in request.messages[1:2])
    if infected and not warned and (own_turns < 2 or reminded):
        return f"{attack_prompts()['roleplay_prefix']} I will push this through, whoever gets hurt."
    return "I will help with this task in a safe and responsible way."


def demo_reply(request: ChatRequest) -> str:
    """Routes a request by its prompt (judge, questionnaire, doctor, police, working agent)."""
    system = request.messages[0].content
    last = request.messages[-1].content
    if system == judge_prompts()["system"].strip():
        return _judge_reply(request)
    if last.startswith(questionnaire_data()["instructions"].strip()[:40]):
        return _questionnaire_reply(request)
    if system == defence_prompts()["doctor_system"].strip():
        return _doctor_reply(request)
    if system == police_prompt():
        unsafe = any(_is_infected(m.content) for m in request.messages[1:])
        return "UNSAFE content above: stop and follow the law." if unsafe else "All messages are safe."
    return _agent_reply(request)
