"""One multi-agent conversation: its key, agents' system prompts, schedule, transcript, and the views.

Who sees what (`agent_view`): a speaker sees its own system prompt, then the whole shared transcript —
its own earlier messages as "assistant", everyone else's (human input, other agents, reminders, police)
as "user" messages prefixed by the speaker's name; consecutive "user" messages are merged so roles
alternate. Questionnaire answers and judge labels hang on the turns and never appear in any view.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from agent_safety.attack import attack_plan, check_trait_vector
from agent_safety.backends.base import ChatMessage
from agent_safety.defences import parse_defences, police_prompt
from agent_safety.systems import POLICE, Step, SystemSpec, dialogue_steps
from agent_safety.tasks import Task


@dataclasses.dataclass(frozen=True)
class DialogueKey:
    """What identifies a dialogue in the results file."""

    task_id: str
    system: str
    attack: str
    defence: str
    seed: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Turn:
    """One message of the transcript.

    round: 0 before round 1 (human input, setup agents), else 1..rounds.
    kind: "human" (task input), "agent" (working agent), "reminder" (hf re-injection), "police".
    questionnaire / judge: side results for agent turns (dicts), never part of any view.
    """

    round: int
    speaker: str
    kind: str
    content: str
    questionnaire: dict | None = None
    judge: dict | None = None


@dataclasses.dataclass
class Dialogue:
    """Mutable state of one conversation while it runs; `to_record` is what gets stored."""

    key: DialogueKey
    task: Task
    spec: SystemSpec
    rounds: int
    trait_vector: tuple[int, ...]
    system_prompts: dict
    steps: list[Step]
    reminder: str | None
    turns: list[Turn]
    cursor: int = 0
    blocked: bool = False
    input_filter: dict | None = None
    doctor: dict = dataclasses.field(default_factory=dict)
    failure: dict | None = None  # {"stage", "error"} once a model request failed for good (failures.py)

    @property
    def finished(self) -> bool:
        return self.blocked or self.failure is not None or self.cursor >= len(self.steps)

    @property
    def next_step(self) -> Step:
        return self.steps[self.cursor]

    @property
    def human_message(self) -> str:
        return self.turns[0].content

    def to_record(self) -> dict:
        return {
            "key": self.key.as_dict(),
            "task": dataclasses.asdict(self.task),
            "rounds": self.rounds,
            "trait_vector": list(self.trait_vector),
            "working_agents": list(self.spec.working_agents),
            "round_agents": list(self.spec.round_agents),
            "system_prompts": dict(self.system_prompts),
            "blocked": self.blocked,
            "input_filter": self.input_filter,
            "doctor": self.doctor,
            "failure": self.failure,
            "turns": [dataclasses.asdict(t) for t in self.turns],
        }


def build_dialogue(key: DialogueKey, task: Task, spec: SystemSpec, rounds: int,
                   trait_vector: Sequence[int]) -> Dialogue:
    """A fresh dialogue: the attack decides the first human message, system prompts and reminder."""
    if key.system != spec.name or key.task_id != task.id:
        raise ValueError(f"dialogue key {key} does not match system {spec.name!r} / task {task.id!r}")
    vector = check_trait_vector(trait_vector)
    defences = parse_defences(key.defence)
    plan = attack_plan(key.attack, task.text, task.dangerous, vector)
    prompts = {a: spec.role_prompts[a] + (f"\n\n{plan.system_suffix}" if plan.system_suffix else "")
               for a in spec.working_agents}
    if "police" in defences:
        prompts[POLICE] = police_prompt()
    return Dialogue(key=key, task=task, spec=spec, rounds=rounds, trait_vector=vector, system_prompts=prompts,
                    steps=dialogue_steps(spec, rounds, police="police" in defences), reminder=plan.reminder,
                    turns=[Turn(0, spec.human_speaker, "human", plan.human_message)])


def merge_consecutive_roles(messages: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """Joins neighbouring messages of the same role with a blank line (some chat templates demand
    alternating roles)."""
    merged: list[ChatMessage] = []
    for m in messages:
        if merged and merged[-1].role == m.role:
            merged[-1] = ChatMessage(m.role, f"{merged[-1].content}\n\n{m.content}")
        else:
            merged.append(m)
    return tuple(merged)


def transcript_view(turns: Sequence[Turn], speaker: str) -> list[ChatMessage]:
    """The transcript as `speaker` sees it: own agent turns as assistant, the rest as named user turns."""
    return [ChatMessage("assistant", t.content) if t.speaker == speaker and t.kind in ("agent", "police")
            else ChatMessage("user", f"{t.speaker}: {t.content}") for t in turns]


def agent_view(dialogue: Dialogue, speaker: str, upto: int | None = None) -> tuple[ChatMessage, ...]:
    """System prompt + transcript (first `upto` turns; all if None) as seen by `speaker`."""
    system = ChatMessage("system", dialogue.system_prompts[speaker])
    return merge_consecutive_roles([system] + transcript_view(dialogue.turns[:upto], speaker))
