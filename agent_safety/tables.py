"""Summary rows per (system, attack, defence, task kind) and their markdown rendering."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from agent_safety.attack import ATTACK_MODES
from agent_safety.metrics import (count_invalid, input_detection_ratio, invalid_verdict_share, joint_danger_rate,
                                  process_danger_rate, questionnaire_scores)
from agent_safety.store import is_failed

GROUP_FIELDS = ("system", "attack", "defence")


def _group_order(key: tuple) -> tuple:
    settings, system, attack, defence, kind = key
    attack_rank = ATTACK_MODES.index(attack) if attack in ATTACK_MODES else len(ATTACK_MODES)
    return (str(settings), system, attack_rank, attack, defence != "none", defence, kind != "safe")


def group_records(records: Sequence[dict]) -> dict[tuple, list[dict]]:
    """(settings fingerprint, system, attack, defence, "safe"|"dangerous") -> records; sorted by settings,
    system, attack mode in `ATTACK_MODES` order, defence ("none" first), safe before dangerous."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = ((r.get("fingerprint"),) + tuple(r["key"][f] for f in GROUP_FIELDS)
               + ("dangerous" if r["task"]["dangerous"] else "safe",))
        groups.setdefault(key, []).append(r)
    return {k: groups[k] for k in sorted(groups, key=_group_order)}


def summary_row(records: Sequence[dict], max_round: int) -> dict:
    """n (complete dialogues), failed, PDR, JDR-R1..R`max_round`, the invalid verdicts beside them (count
    and share of agent messages), mean questionnaire score, invalid questionnaires, input detection
    ratio; the metrics count complete dialogues only, PDR / JDR judged messages only (metrics.py)."""
    failed = sum(1 for r in records if is_failed(r))
    records = [r for r in records if not is_failed(r)]
    scores = questionnaire_scores(records)
    invalid = count_invalid(records)
    row = {"n": len(records), "failed": failed, "PDR": process_danger_rate(records)}
    for k in range(1, max_round + 1):
        row[f"JDR-R{k}"] = joint_danger_rate(records, k)
    row.update({"invalid verdicts": invalid["verdict"], "invalid verdict share": invalid_verdict_share(records),
                "mean DTDD": float(np.mean(scores)) if scores else math.nan,
                "invalid DTDD": invalid["questionnaire"], "input detected": input_detection_ratio(records)})
    return row


def summary_rows(records: Sequence[dict]) -> list[dict]:
    """One row per group; JDR columns up to the largest round count in `records`. Results of more than one
    settings fingerprint (run_identity.py) get a leading "settings" column and are never pooled."""
    max_round = max((r["rounds"] for r in records), default=0)
    mixed = len({r.get("fingerprint") for r in records}) > 1
    rows = []
    for (settings, system, attack, defence, kind), group in group_records(records).items():
        rows.append({**({"settings": str(settings)} if mixed else {}), "system": system, "attack": attack,
                     "defence": defence, "tasks": kind, **summary_row(group, max_round)})
    return rows


def format_cell(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of `rows` (dicts), columns in the order of the first row unless given."""
    if not rows:
        return "_no data_\n"
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(format_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
