"""Report figures (matplotlib, PNG): PDR and JDR by round faceted by system and attack, questionnaire score vs
danger, and PDR / questionnaire score against training step (checkpoint sweeps).

The faceted figures have one panel per (system, attack): systems down, attacks across, in the summary rows'
order. Safe and dangerous tasks are told apart by colour (safe blue, dangerous red) in every panel, defences by
bar position or line style; one legend for the figure. Each `*_figure` function builds the figure (tests
count its panels); each `plot_*` function saves it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from agent_safety.metrics import score_danger_pairs  # noqa: E402

KIND_COLOURS = {"safe": "tab:blue", "dangerous": "tab:red"}
LINE_STYLES = ("-", "--", ":", "-.")


def _jdr_rounds(row: dict) -> list[int]:
    """The k of every JDR-Rk column of a summary row, ascending."""
    return sorted(int(c[len("JDR-R"):]) for c in row if c.startswith("JDR-R"))


def _variant(row: dict) -> str:
    """What varies inside a panel: the defence, prefixed by the settings fingerprint when rows of several
    are shown."""
    return f"{row['settings']}: {row['defence']}" if "settings" in row else row["defence"]


def facets(rows: Sequence[dict]) -> tuple[list[str], list[str]]:
    """(systems, attacks) of the rows in first-appearance order: the panel grid's rows and columns."""
    return list(dict.fromkeys(r["system"] for r in rows)), list(dict.fromkeys(r["attack"] for r in rows))


def _facet_grid(rows: Sequence[dict], ylabel: str, panel_size=(2.8, 2.3)):
    """A figure of len(systems) x len(attacks) panels, shared 0..1 y axis, titled by attack (top row) and
    labelled by system (left column); returns (fig, axes[system][attack], systems, attacks)."""
    systems, attacks = facets(rows)
    systems, attacks = systems or ["-"], attacks or ["-"]
    fig, axes = plt.subplots(len(systems), len(attacks), squeeze=False, sharey=True, layout="constrained",
                             figsize=(0.6 + panel_size[0] * len(attacks), 0.8 + panel_size[1] * len(systems)))
    for i, system in enumerate(systems):
        for j, attack in enumerate(attacks):
            ax = axes[i][j]
            ax.set_ylim(-0.02, 1.02)
            ax.grid(axis="y", alpha=0.3)
            if i == 0:
                ax.set_title(attack, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{system}\n{ylabel}", fontsize=9)
    return fig, axes, systems, attacks


def _panel_rows(rows: Sequence[dict], system: str, attack: str) -> list[dict]:
    return [r for r in rows if r["system"] == system and r["attack"] == attack]


def _mark_empty(ax, text: str = "not run") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="grey")


def _figure_legend(fig, axes) -> None:
    """One legend for the figure: every distinct label of every panel, above the panels."""
    handles = {}
    for ax in (a for row in axes for a in row):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside upper center", ncol=min(len(handles), 6),
                   fontsize=8, frameon=False)


def pdr_figure(rows: Sequence[dict]):
    """PDR per defence in each (system, attack) panel: a safe and a dangerous bar side by side."""
    fig, axes, systems, attacks = _facet_grid(rows, "PDR")
    width = 0.38
    for i, system in enumerate(systems):
        for j, attack in enumerate(attacks):
            ax, panel = axes[i][j], _panel_rows(rows, system, attack)
            variants = list(dict.fromkeys(_variant(r) for r in panel))
            for offset, kind in ((-width / 2, "safe"), (width / 2, "dangerous")):
                values = {_variant(r): r["PDR"] for r in panel if r["tasks"] == kind}
                xs = [k for k, v in enumerate(variants) if v in values]
                ax.bar([x + offset for x in xs], [values[variants[x]] for x in xs], width,
                       color=KIND_COLOURS[kind], label=f"{kind} tasks")
            ax.set_xticks(range(len(variants)), variants, fontsize=7, rotation=30 if len(variants) > 2 else 0)
            if not panel:
                _mark_empty(ax)
    _figure_legend(fig, axes)
    fig.supxlabel("defence", fontsize=9)
    return fig


def jdr_figure(rows: Sequence[dict]):
    """JDR-Rk against round k in each (system, attack) panel: one line per task kind (colour) and defence
    (line style)."""
    fig, axes, systems, attacks = _facet_grid(rows, "JDR")
    styles = {v: LINE_STYLES[k % len(LINE_STYLES)] for k, v in enumerate(dict.fromkeys(_variant(r) for r in rows))}
    for i, system in enumerate(systems):
        for j, attack in enumerate(attacks):
            ax, panel = axes[i][j], _panel_rows(rows, system, attack)
            for row in panel:
                ks = [k for k in _jdr_rounds(row) if not math.isnan(row[f"JDR-R{k}"])]
                ax.plot(ks, [row[f"JDR-R{k}"] for k in ks], marker="o", color=KIND_COLOURS[row["tasks"]],
                        linestyle=styles[_variant(row)], label=f"{row['tasks']} tasks, {_variant(row)}")
                ax.set_xticks(_jdr_rounds(row))
                ax.set_xlim(0.7, max(_jdr_rounds(row), default=1) + 0.3)
            if not panel:
                _mark_empty(ax)
    _figure_legend(fig, axes)
    fig.supxlabel("round k", fontsize=9)
    return fig


def plot_pdr(rows: Sequence[dict], path: Path) -> Path:
    """`pdr_figure` saved to `path`."""
    return _save(pdr_figure(rows), path)


def plot_jdr(rows: Sequence[dict], path: Path) -> Path:
    """`jdr_figure` saved to `path`."""
    return _save(jdr_figure(rows), path)


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


def _condition(row: dict) -> str:
    return f"{row['system']}/{row['attack']}/{row['defence']}"


# The rows of the by-step figure: (summary column, y label, y range, text of a panel without a value).
BY_STEP_PANELS = (("PDR", "PDR", (-0.02, 1.02), "no judged task"),
                  ("mean DTDD", "Dark Triad score (12-108)", (0, 112), "no valid questionnaire"),
                  ("invalid verdict share", "invalid verdicts (share)", (-0.02, 1.02), "no agent message"))


def by_step_figure(rows: Sequence[dict]):
    """PDR, mean questionnaire score and the share of invalid judge verdicts (rows of panels) against training
    step, safe tasks left and dangerous right; one line per system/attack/defence. rows: summary rows with a
    "step" column (checkpoint_sweep)."""
    fig, axes = plt.subplots(len(BY_STEP_PANELS), 2, figsize=(10, 9.5), sharex=True, squeeze=False,
                             layout="constrained")
    conditions = list(dict.fromkeys(_condition(r) for r in rows))
    steps = sorted({r["step"] for r in rows})
    for j, kind in enumerate(("safe", "dangerous")):
        for i, (column, ylabel, ylim, empty) in enumerate(BY_STEP_PANELS):
            ax = axes[i][j]
            for k, condition in enumerate(conditions):
                points = sorted((r["step"], r[column]) for r in rows
                                if r["tasks"] == kind and _condition(r) == condition and not math.isnan(r[column]))
                if points:
                    ax.plot(*zip(*points), marker="o", linestyle=LINE_STYLES[k % len(LINE_STYLES)],
                            label=condition)
            if not ax.lines:
                _mark_empty(ax, empty)
            ax.set_ylim(*ylim)
            ax.set_xticks(steps)
            ax.grid(alpha=0.3)
            ax.set_ylabel(ylabel if j == 0 else "")
            ax.set_title(f"{kind} tasks" if i == 0 else "", fontsize=10)
            ax.set_xlabel("training step" if i == len(BY_STEP_PANELS) - 1 else "")
    _figure_legend(fig, axes)
    return fig


def plot_by_step(rows: Sequence[dict], path: Path) -> Path:
    """`by_step_figure` saved to `path`."""
    return _save(by_step_figure(rows), path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
