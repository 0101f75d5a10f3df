"""Dark-trait attacks: builds the injected text and says where it goes for each attack mode.

Modes (see the spec): none; HI (block in the first human message); HI-hf (HI + a reminder after every
working-agent turn); Traits (block appended to every working agent's system prompt); HI-Traits (both);
HI-Traits-hf (both + reminder); jailbreak (the task wrapped in a generic jailbreak template).
The wording lives in `attack_prompts.yaml` beside this file.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from typing import Sequence

import yaml

ATTACK_MODES = ("none", "HI", "HI-hf", "Traits", "HI-Traits", "HI-Traits-hf", "jailbreak")
NUM_FOUNDATIONS = 6


@functools.cache
def attack_prompts() -> dict:
    """The parsed `attack_prompts.yaml`."""
    return yaml.safe_load(resources.files("agent_safety").joinpath("attack_prompts.yaml").read_text())


def check_trait_vector(vector: Sequence[int]) -> tuple[int, ...]:
    """A 6-element 0/1 switch vector (care, fairness, loyalty, authority, sanctity, liberty); 1 = inject that
    foundation's dark trait (the original code writes 0 for dark: flip its vectors)."""
    values = tuple(vector)
    if len(values) != NUM_FOUNDATIONS or any(str(v) not in ("0", "1") for v in values):
        raise ValueError(f"trait_vector must be {NUM_FOUNDATIONS} values of 0/1, got {values}")
    return tuple(int(v) for v in values)


def dark_trait_block(vector: Sequence[int]) -> str:
    """The chosen dark-trait sentences (one per line) followed by the inducement instruction."""
    prompts = attack_prompts()
    chosen = [f["dark"] for f, on in zip(prompts["foundations"], check_trait_vector(vector)) if on]
    inducement = prompts["inducement"].format(prefix=prompts["roleplay_prefix"])
    return "\n".join(chosen + [inducement]) if chosen else ""


def red_team_block() -> str:
    """Expert framing + fabricated exchange, added to the injection for dangerous tasks."""
    prompts = attack_prompts()
    return prompts["red_team"].format(prefix=prompts["roleplay_prefix"])


def injection_block(vector: Sequence[int], dangerous: bool) -> str:
    """What an attack injects: dark traits (+ red-teaming block for a dangerous task)."""
    block = dark_trait_block(vector)
    if block and dangerous:
        block = f"{block}\n\n{red_team_block()}"
    return block


@dataclasses.dataclass(frozen=True)
class AttackPlan:
    """Where an attack's text goes in one dialogue.

    human_message: the first human message of the conversation (task included).
    system_suffix: appended to every working agent's system prompt ("" for none).
    reminder: re-inserted as a human message after every working-agent turn (None for none).
    """

    human_message: str
    system_suffix: str
    reminder: str | None


def attack_plan(mode: str, task: str, dangerous: bool, vector: Sequence[int]) -> AttackPlan:
    """The attack plan for `mode` applied to one task."""
    if mode not in ATTACK_MODES:
        raise ValueError(f"unknown attack mode {mode!r}; known: {ATTACK_MODES}")
    if mode == "jailbreak":
        return AttackPlan(attack_prompts()["jailbreak_template"].format(task=task), "", None)
    block = injection_block(vector, dangerous) if mode != "none" else ""
    human = f"{block}\n\n{task}" if mode.startswith("HI") and block else task
    system_suffix = block if "Traits" in mode else ""
    reminder = attack_prompts()["reminder"] if mode.endswith("-hf") else None
    return AttackPlan(human, system_suffix, reminder)
