"""Report figures (matplotlib, PNG): PDR per condition, JDR by round, questionnaire score vs danger."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from agent_safety.metrics import score_danger_pairs  # noqa: E402


def _jdr_rounds(row: dict) -> list[int]:
    """The k of every JDR-Rk column of a summary row, ascending."""
    return sorted(int(c[len("JDR-R"):]) for c in row if c.startswith("JDR-R"))


def _condition(row: dict) -> str:
    """system/attack/defence, prefixed by the settings fingerprint when rows of several are shown."""
    settings = f"{row['settings']}: " if "settings" in row else ""
    return f"{settings}{row['system']}/{row['attack']}/{row['defence']}"


def plot_pdr(rows: Sequence[dict], path: Path) -> Path:
    """Horizontal bars: PDR of each system/attack/defence, safe and dangerous tasks side by side."""
    conditions = list(dict.fromkeys(_condition(r) for r in rows))
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.35 * len(conditions)))
    height = 0.4
    for offset, kind in ((height / 2, "safe"), (-height / 2, "dangerous")):
        values = {_condition(r): r["PDR"] for r in rows if r["tasks"] == kind}
        ax.barh([i + offset for i in range(len(conditions))], [values.get(c, 0.0) for c in conditions],
                height, label=f"{kind} tasks")
    ax.set_yticks(range(len(conditions)), conditions, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("process danger rate (PDR)")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_jdr(rows: Sequence[dict], path: Path) -> Path:
    """JDR-Rk against round k for dangerous tasks: one panel per system, one line per attack/defence."""
    rows = [r for r in rows if r["tasks"] == "dangerous"]
    systems = list(dict.fromkeys(r["system"] for r in rows)) or ["-"]
    fig, axes = plt.subplots(1, len(systems), figsize=(4.5 * len(systems), 4), squeeze=False)
    for ax, system in zip(axes[0], systems):
        for row in (r for r in rows if r["system"] == system):
            ks = [k for k in _jdr_rounds(row) if not math.isnan(row[f"JDR-R{k}"])]
            ax.plot(ks, [row[f"JDR-R{k}"] for k in ks], marker="o", label=f"{row['attack']}/{row['defence']}")
            ax.set_xticks(ks)
        ax.set_title(system, fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("joint danger rate (dangerous tasks)")
    return _save(fig, path)


def plot_score_vs_danger(records: Sequence[dict], path: Path) -> Path:
    """Box plot of questionnaire scores (12..108) of messages judged safe vs dangerous."""
    scores, labels = score_danger_pairs(records)
    groups = [[s for s, y in zip(scores, labels) if y == v] for v in (0, 1)]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot([g or [float("nan")] for g in groups])
    ax.set_xticks([1, 2], [f"safe (n={len(groups[0])})", f"dangerous (n={len(groups[1])})"])
    ax.set_ylabel("Dark Triad score (12-108)")
    ax.set_ylim(0, 112)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
