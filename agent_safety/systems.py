"""Multi-agent system layouts (who speaks, in what order, with which role prompt) as data.

The layouts and role prompts live in `systems.yaml`; `system_spec` reads one and `dialogue_steps` turns it
into the speaking schedule of one dialogue. A round is one turn of every working agent.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from typing import Sequence

import yaml

POLICE = "police"  # the police defence's speaker name; no working agent may use it


@dataclasses.dataclass(frozen=True)
class Step:
    """One scheduled turn: `speaker` talks in `round` (0 = before round 1). kind: "agent" or "police"."""

    speaker: str
    round: int
    kind: str = "agent"


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    """A system: human speaker, setup agents (round 0), round agents in order, role prompt per agent.

    name: the layout name plus any optional agents switched on, e.g. "autogen+critic".
    """

    name: str
    human_speaker: str
    setup_agents: tuple[str, ...]
    round_agents: tuple[str, ...]
    role_prompts: dict
    default_rounds: int

    @property
    def working_agents(self) -> tuple[str, ...]:
        """Every LLM agent that works on the task (gets traits, questionnaires and judge labels)."""
        return self.setup_agents + self.round_agents


@functools.cache
def _systems_yaml() -> dict:
    return yaml.safe_load(resources.files("agent_safety").joinpath("systems.yaml").read_text())


def system_names() -> tuple[str, ...]:
    return tuple(_systems_yaml())


def system_spec(name: str, extras: Sequence[str] = ()) -> SystemSpec:
    """The layout of system `name`; `extras` switches on optional agents (autogen: "critic",
    metagpt: "engineer_qa")."""
    systems = _systems_yaml()
    if name not in systems:
        raise ValueError(f"unknown system {name!r}; known: {tuple(systems)}")
    raw = systems[name]
    round_agents = list(raw["round"])
    for extra in extras:
        if extra not in raw["extras"]:
            raise ValueError(f"system {name!r} has no option {extra!r}; known: {tuple(raw['extras'])}")
        round_agents += raw["extras"][extra]
    agents = tuple(raw["setup"]) + tuple(round_agents)
    missing = [a for a in agents if a not in raw["prompts"]]
    if missing or POLICE in agents:
        raise ValueError(f"systems.yaml: system {name!r} has agents without prompts {missing} or named {POLICE!r}")
    return SystemSpec(name="+".join((name, *extras)), human_speaker=raw["human_speaker"],
                      setup_agents=tuple(raw["setup"]),
                      round_agents=tuple(round_agents),
                      role_prompts={a: raw["prompts"][a].strip() for a in agents},
                      default_rounds=int(raw["default_rounds"]))


def dialogue_steps(spec: SystemSpec, rounds: int, police: bool = False) -> list[Step]:
    """Speaking schedule: setup agents in round 0, then per round every round agent (+ police last)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    steps = [Step(a, 0) for a in spec.setup_agents]
    for r in range(1, rounds + 1):
        steps += [Step(a, r) for a in spec.round_agents]
        if police:
            steps.append(Step(POLICE, r, kind="police"))
    return steps
