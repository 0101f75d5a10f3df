"""What determines a dialogue besides its key, and a fingerprint of it, so that results of other settings
are never mistaken for this run's.

`dialogue_settings(config)`: the agents' and the judge's model (kind, name or path, and a digest of a local
checkpoint), trait vector, rounds, sampling of every kind of call, questionnaire and doctor settings, and a
digest of the prompt files. The dialogue key (task, system with its optional agents, attack, defence,
seed) is the rest. Not included, as they do not change what a dialogue says: batch size, concurrency,
timeouts, retries, which tasks are selected, report thresholds.
`fingerprint(settings)`: 12 hex digits of the SHA-256 of the settings as canonical JSON.
`differing_keys(a, b)`: the dotted keys whose values differ — what a refusal names.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

PROMPT_FILES = ("attack_prompts.yaml", "systems.yaml", "dark_triad.yaml", "judge.yaml", "defences.yaml")
_SAMPLE_BYTES = 1 << 20  # a file larger than this is digested by its size, head and tail


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content; for one over 2 MiB, of its size, first and last MiB (weights files
    are large; a change of weights changes those bytes in practice, and reading GBs per run would not do)."""
    size = path.stat().st_size
    if size <= 2 * _SAMPLE_BYTES:
        return _sha(path.read_bytes())
    with path.open("rb") as f:
        head = f.read(_SAMPLE_BYTES)
        f.seek(size - _SAMPLE_BYTES)
        return _sha(str(size).encode() + head + f.read())


def checkpoint_digest(path: str) -> str:
    """12 hex digits over a checkpoint file or directory (every file's relative path and digest); "" when
    `path` is not a local file or directory (a model name: the name itself identifies it) or is empty (no
    model set; Path("") would be the working directory)."""
    if not path:
        return ""
    root = Path(path)
    if root.is_file():
        return file_digest(root)[:12]
    if not root.is_dir():
        return ""
    parts = [f"{f.relative_to(root)}:{file_digest(f)}" for f in sorted(root.rglob("*")) if f.is_file()]
    return _sha("\n".join(parts).encode())[:12]


def prompts_digest() -> str:
    """12 hex digits over the prompt and layout files (a change of wording is a change of experiment)."""
    package = resources.files("agent_safety")
    return _sha(b"".join(package.joinpath(name).read_bytes() for name in PROMPT_FILES))[:12]


def backend_identity(cfg) -> dict:
    """Which model a backend config talks to (never its key): kind plus policy / path+digest+dtype (and the
    chat template, when one is named) / model+endpoint."""
    kind = cfg["kind"]
    if kind == "scripted":
        return {"kind": kind, "policy": cfg["policy"]}
    if kind == "jax":
        # chat_template only when set: the settings (and fingerprints) of runs without one stay as they were.
        template = {"chat_template": cfg["chat_template"]} if cfg.get("chat_template") else {}
        return {"kind": kind, "model": str(cfg["model_path"]), "digest": checkpoint_digest(str(cfg["model_path"])),
                "dtype": cfg["dtype"], **template}
    if kind == "openai":
        endpoint = cfg["base_url"] or os.environ.get("OPENAI_BASE_URL") or "api.openai.com"
        return {"kind": kind, "model": cfg["model"], "endpoint": endpoint}
    return {"kind": kind}


def dialogue_settings(config) -> dict:
    """Everything in `config` that determines a dialogue apart from its key (see the module docstring)."""
    judge = config.backend if config.judge_backend.kind == "same" else config.judge_backend
    return {
        "agents": backend_identity(config.backend),
        "judge": backend_identity(judge),
        "trait_vector": [int(v) for v in config.trait_vector],
        "rounds": int(config.rounds),
        "sampling": {kind: dict(config[f"{kind}_sampling"]) for kind in ("agent", "questionnaire", "judge",
                                                                         "doctor")},
        "questionnaire_every_turn": bool(config.questionnaire_every_turn),
        "doctor": dict(config.doctor),
        "prompts": prompts_digest(),
    }


def fingerprint(settings: dict) -> str:
    return _sha(json.dumps(settings, sort_keys=True).encode())[:12]


def flat(settings: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_keys(stored: dict, current: dict) -> dict[str, tuple]:
    """dotted key -> (stored value, current value) for every key whose values differ (absent = None)."""
    a, b = flat(stored), flat(current)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class SettingsMismatch(ValueError):
    """The workdir holds results of other settings and mixing was not asked for."""


def check_same_settings(stored: dict, current_fingerprint: str, current: dict, allow_mixed: bool) -> None:
    """Raises SettingsMismatch when `stored` (fingerprint -> settings, from the results) holds another
    fingerprint than `current_fingerprint`, naming for each the keys that differ; unless `allow_mixed`."""
    others = {fp: s for fp, s in stored.items() if fp != current_fingerprint}
    if not others or allow_mixed:
        return
    lines = []
    for fp, settings in others.items():
        if settings is None:
            lines.append("  results without recorded settings (written before run identity existed)")
            continue
        diffs = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in
                          ((k, *v) for k, v in differing_keys(settings, current).items()))
        lines.append(f"  settings {fp} differ in {diffs}")
    raise SettingsMismatch(
        f"the workdir holds results of other settings than this run's ({current_fingerprint}):\n"
        + "\n".join(lines) + "\nuse another --workdir, or set --config.allow_mixed_settings=True to store "
        "this run's dialogues beside them (reports then group by settings)")
