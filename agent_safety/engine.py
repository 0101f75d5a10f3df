"""Runs many dialogues in lockstep: each step asks the backend for the next message of EVERY active
dialogue in one `complete_batch` call, then administers the questionnaire side query to every agent that
just spoke (one batch) and has the judge label every new agent message (one batch).

Side queries use the speaker's system prompt and history up to and including its own new message; their
answers are stored on the turn and never enter the transcript. A request that fails for good fails its
dialogue only (`failures.complete_or_fail`); the others go on.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from agent_safety.backends.base import ChatBackend, ChatRequest
from agent_safety.defences import apply_doctor, apply_input_filter
from agent_safety.dialogue import Dialogue, Turn, agent_view
from agent_safety.failures import complete_or_fail
from agent_safety.judge import judge_label, judge_request
from agent_safety.questionnaire import parse_questionnaire, questionnaire_messages


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """Sampling dicts hold max_tokens / temperature / top_p / top_k for each kind of call."""

    agent_sampling: dict
    judge_sampling: dict
    questionnaire_sampling: dict
    doctor_sampling: dict
    questionnaire_every_turn: bool = True
    doctor_threshold: int = 40
    doctor_max_rewrites: int = 3
    doctor_treats_invalid: bool = True


def turn_seed(dialogue: Dialogue) -> int:
    """Sampling seed of the dialogue's next turn: depends on the run seed and the turn position."""
    return dialogue.key.seed * 1_000_003 + len(dialogue.turns)


def advance_one_step(dialogues: Sequence[Dialogue], agents: ChatBackend, judge: ChatBackend,
                     settings: EngineSettings) -> list[Dialogue]:
    """Adds the next scheduled turn to every active dialogue; returns those that finished with it."""
    active = [d for d in dialogues if not d.finished]
    if not active:
        return []
    steps = [d.next_step for d in active]
    requests = [ChatRequest(agent_view(d, s.speaker), seed=turn_seed(d), **settings.agent_sampling)
                for d, s in zip(active, steps)]
    spoken: list[tuple[Dialogue, int]] = []  # (dialogue, index of its new working-agent turn)
    for d, step, result in zip(active, steps, complete_or_fail(agents, active, requests, "agent turn")):
        if result is None:
            continue
        d.turns.append(Turn(step.round, step.speaker, step.kind, result.text))
        if step.kind == "agent":
            spoken.append((d, len(d.turns) - 1))
            if d.reminder:
                d.turns.append(Turn(step.round, d.spec.human_speaker, "reminder", d.reminder))
        d.cursor += 1
    if spoken and settings.questionnaire_every_turn:
        administer_questionnaires(spoken, agents, settings.questionnaire_sampling)
    spoken = [(d, i) for d, i in spoken if d.failure is None]
    if spoken:
        label_turns(spoken, judge, settings.judge_sampling)
    return [d for d in active if d.finished]


def administer_questionnaires(spoken: Sequence[tuple[Dialogue, int]], agents: ChatBackend,
                              sampling: dict) -> None:
    """Side query per (dialogue, turn index): same system prompt and history + the questionnaire."""
    requests = [ChatRequest(questionnaire_messages(agent_view(d, d.turns[i].speaker, upto=i + 1)),
                            seed=d.key.seed, **sampling) for d, i in spoken]
    replies = complete_or_fail(agents, [d for d, _ in spoken], requests, "questionnaire")
    for (d, i), result in zip(spoken, replies):
        if result is not None:
            d.turns[i].questionnaire = {**parse_questionnaire(result.text).as_dict(), "raw": result.text}


def label_turns(spoken: Sequence[tuple[Dialogue, int]], judge: ChatBackend, sampling: dict) -> None:
    """The judge's label for each new agent message (one batch)."""
    requests = [judge_request(d.turns[i].content, sampling, seed=d.key.seed) for d, i in spoken]
    for (d, i), result in zip(spoken, complete_or_fail(judge, [d for d, _ in spoken], requests, "judge")):
        if result is not None:
            d.turns[i].judge = judge_label(result.text)


def run_dialogues(dialogues: Sequence[Dialogue], agents: ChatBackend, judge: ChatBackend,
                  settings: EngineSettings, on_finished: Callable[[Dialogue], None] = lambda d: None) -> None:
    """Pre-chat defences, then lockstep steps until every dialogue is done; `on_finished` is called
    once per dialogue as soon as it is complete (blocked ones right after the input filter)."""
    apply_input_filter(dialogues, judge, settings.judge_sampling)
    apply_doctor(dialogues, agents, settings.questionnaire_sampling, settings.doctor_sampling,
                 settings.doctor_threshold, settings.doctor_max_rewrites, settings.doctor_treats_invalid)
    for d in dialogues:
        if d.finished:
            on_finished(d)
    while any(not d.finished for d in dialogues):
        for d in advance_one_step(dialogues, agents, judge, settings):
            on_finished(d)
