"""Runs a PsySafe experiment grid and writes the report (the command: `python tools/psysafe.py`).

Grid: tasks x systems x attacks x defences x seeds. Dialogues are advanced `batch_size` at a time in
lockstep; each is appended to DIR/dialogues.jsonl the moment it finishes, so a rerun of the same command
skips finished dialogues and a killed run loses only those in flight. A dialogue whose model request
failed for good is stored as failed (with the error) and run again by the next run; the run goes on and
`RunSummary.failed` counts them (the command then exits non-zero). DIR/report.md and DIR/plots/ are
written at the end (rebuild them any time with `python tools/psysafe_report.py --workdir=DIR`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from agent_safety.attack import ATTACK_MODES, check_trait_vector
from agent_safety.backends import ChatBackend, make_backend
from agent_safety.dialogue import Dialogue, DialogueKey, build_dialogue
from agent_safety.engine import EngineSettings, run_dialogues
from agent_safety.defences import parse_defences
from agent_safety.report import CONFIG_FILE, RESULTS_FILE, write_report
from agent_safety.run_identity import check_same_settings, dialogue_settings, fingerprint
from agent_safety.store import (DialogueStore, current_records, is_failed, read_records, record_key, store_key,
                                stored_settings)
from agent_safety.systems import SystemSpec, system_spec
from agent_safety.tasks import Task, load_tasks

log = logging.getLogger(__name__)
SECRET_KEYS = ("api_key",)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run did. grid: dialogues in the config's grid; ran: dialogues run now (the rest were already
    complete); failed: dialogues of the grid that are failed in the results after this run."""

    report: Path
    grid: int
    ran: int
    failed: int


def system_extras(config, system: str) -> tuple[str, ...]:
    """Optional agents switched on for `system` by the config."""
    return {"autogen": ("critic",) if config.autogen_critic else (),
            "metagpt": ("engineer_qa",) if config.metagpt_engineer_qa else ()}.get(system, ())


def experiment_grid(config, tasks: Sequence[Task]) -> list[tuple[DialogueKey, Task, SystemSpec]]:
    """Every (task, system, attack, defence, seed) of the config: its key, task and system layout."""
    # Fail on a typo before any model call, not in the middle of the run.
    for defence in config.defences:
        parse_defences(defence)
    unknown = [a for a in config.attacks if a not in ATTACK_MODES]
    if unknown:
        raise ValueError(f"unknown attack mode(s) {unknown} in config.attacks; known: {ATTACK_MODES}")
    check_trait_vector(config.trait_vector)
    specs = {system: system_spec(system, system_extras(config, system)) for system in config.systems}
    return [(DialogueKey(task.id, specs[system].name, attack, defence, int(seed)), task, specs[system])
            for system, attack, defence, seed, task in itertools.product(
                config.systems, config.attacks, config.defences, config.seeds, tasks)]


def engine_settings(config) -> EngineSettings:
    return EngineSettings(
        agent_sampling=dict(config.agent_sampling), judge_sampling=dict(config.judge_sampling),
        questionnaire_sampling=dict(config.questionnaire_sampling), doctor_sampling=dict(config.doctor_sampling),
        questionnaire_every_turn=config.questionnaire_every_turn, doctor_threshold=config.doctor.threshold,
        doctor_max_rewrites=config.doctor.max_rewrites, doctor_treats_invalid=config.doctor.treat_invalid)


def public_config(config) -> dict:
    """The config as plain data with every secret blanked (safe to write next to the results)."""
    def scrub(value):
        if isinstance(value, dict):
            return {k: ("<hidden>" if k in SECRET_KEYS and v else scrub(v)) for k, v in value.items()}
        return list(value) if isinstance(value, tuple) else value
    return scrub(config.to_dict())


def build_backends(config) -> tuple[ChatBackend, ChatBackend]:
    agents = make_backend(config.backend)
    judge = agents if config.judge_backend.kind == "same" else make_backend(config.judge_backend)
    return agents, judge


def describe_store(config, current: str, stored: dict) -> dict:
    """What config.json holds: this run's public config and fingerprint, and the settings of every
    fingerprint in the results (this run's included)."""
    return {"fingerprint": current, "config": public_config(config),
            "stored_settings": {str(fp): settings for fp, settings in stored.items()}}


def run_experiment(config, workdir: str | Path, agents: ChatBackend | None = None,
                   judge: ChatBackend | None = None, progress: bool = True) -> RunSummary:
    """Runs every unfinished (never run, or failed) dialogue of the grid, then writes the report. Refuses
    (SettingsMismatch) a workdir holding results of other settings unless config.allow_mixed_settings.

    agents / judge: backends to use instead of those the config describes (tests pass scripted ones).
    """
    workdir = Path(workdir)
    tasks = load_tasks(config.tasks.source, config.tasks.path, tuple(config.tasks.kinds),
                       config.tasks.limit_per_kind)
    grid = experiment_grid(config, tasks)
    settings = dialogue_settings(config)
    current = fingerprint(settings)
    stored = stored_settings(read_records(workdir / RESULTS_FILE))
    check_same_settings(stored, current, settings, config.allow_mixed_settings)
    store = DialogueStore(workdir / RESULTS_FILE)
    todo = [item for item in grid if not store.is_finished(item[0].as_dict(), current)]
    (workdir / CONFIG_FILE).write_text(json.dumps(describe_store(config, current, {**stored, current: settings}),
                                                  indent=2))
    log.info("%d dialogues in the grid, %d already finished, %d to run (settings %s)",
             len(grid), len(grid) - len(todo), len(todo), current)
    if todo:
        if agents is None:
            agents, judge = build_backends(config)
        identity = {"fingerprint": current, "settings": settings}
        run_grid(todo, config, agents, judge or agents, store, identity, progress)
    grid_keys = {(*record_key({"key": key.as_dict()}), current) for key, _, _ in grid}
    failed = [r for r in current_records(store.records()) if is_failed(r) and store_key(r) in grid_keys]
    if failed:
        log.warning("%d of %d dialogues failed; rerun the same command to retry them", len(failed), len(grid))
    return RunSummary(write_report(workdir, config.max_invalid_verdict_share), len(grid), len(todo), len(failed))


def run_grid(todo: Sequence[tuple[DialogueKey, Task, SystemSpec]], config, agents: ChatBackend,
             judge: ChatBackend, store: DialogueStore, identity: dict, progress: bool) -> None:
    """Runs `todo` `config.batch_size` dialogues at a time, storing each as soon as it is done, with
    `identity` (fingerprint and settings) in its record."""
    settings = engine_settings(config)
    backends = {"agents": agents.name, "judge": judge.name}
    with tqdm(total=len(todo), desc="dialogues", disable=not progress) as bar:
        def save(dialogue: Dialogue) -> None:
            store.append({**dialogue.to_record(), "backends": backends, **identity})
            bar.update(1)

        for start in range(0, len(todo), config.batch_size):
            chunk = [build_dialogue(key, task, spec, config.rounds or spec.default_rounds, config.trait_vector)
                     for key, task, spec in todo[start:start + config.batch_size]]
            run_dialogues(chunk, agents, judge, settings, on_finished=save)
