"""`<out>/report.md`: what the miniature measured, and whether it shows the paper's findings.

Numbers only come from the study's files (pretraining records, table.csv, fit.json dicts, timings); the
checks of the findings are simple, stated tests (rank correlations, R², where N_0 sits), not judgments.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import numpy as np
from scipy import stats

from rl_scaling.scaling import table as table_lib


def _fmt(value, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def machine_line() -> str:
    """Host, CPU count and current 1/5/15-minute load averages."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{platform.node()} ({platform.platform()}, Python {platform.python_version()}), "
            f"{os.cpu_count()} CPU cores, load average now {load}")


def curve_summary(table: dict) -> dict[float, dict]:
    """{N: {"L0", "L_end", "C_end", "D_end", "points"}} from a gathered table (seed-averaged L)."""
    out = {}
    for n in np.unique(table["size"]):
        rows = table["size"] == n
        steps = table["step"][rows]
        first, last = steps.min(), steps.max()
        out[float(n)] = {"L0": float(table["L"][rows][steps == first].mean()),
                         "L_end": float(table["L"][rows][steps == last].mean()),
                         "C_end": float(table["C"][rows][steps == last].mean()),
                         "D_end": float(table["D"][rows][steps == last].mean()),
                         "points": int(len(np.unique(steps)))}
    return out


def spearman(xs, ys) -> float | None:
    """Spearman rank correlation of two sequences (None with fewer than 3 pairs or constant input)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return None
    return float(stats.spearmanr(xs, ys).statistic)


def finding_checks(fits: dict, curves: dict) -> list[str]:
    """One markdown bullet per finding of the paper (1-3; 4 is the data-reuse study, not run here)."""
    lines = []
    sizes = sorted(curves)
    for x in ("C", "D"):
        rep = fits.get((x, "full"))
        if rep is None:
            continue
        free = {float(n): k for n, k in rep.get("free_k", {}).get("k", {}).items()}
        ks = [free[n] for n in sizes if n in free]
        rho = spearman(sizes[:len(ks)], ks)
        lines.append(f"- **1. Larger models learn more per unit of {x}**: per-size free fits give "
                     f"k = {', '.join(_fmt(k, '.3f') for k in ks)} (small to large); Spearman rank correlation "
                     f"of k with N = {_fmt(rho, '.2f')}.")
        lines.append(f"- **2. Power law in {x}**: the saturating law fits with R²(L) = {_fmt(rep['r2']['L'], '.3f')}, "
                     f"R²(ln L) = {_fmt(rep['r2']['log_L'], '.3f')}.")
        if x == "C":
            k_big = rep["k"].get(max(rep["k"], key=float)) if rep["k"] else None
            share = None if not rep["k_max"] or k_big is None else k_big / rep["k_max"]
            lines.append(f"- **3. k(N) grows and saturates** (fit on C): K_max = {_fmt(rep['k_max'], '.3f')}, "
                         f"N_0 = {_fmt(rep['n0'], '.3g')} against N from {sizes[0]:.3g} to {sizes[-1]:.3g}; the "
                         f"largest model reaches k/K_max = {_fmt(share, '.2f')} (near 1: saturated inside the "
                         f"family; near 0: no saturation visible).")
    final = [curves[n]["L_end"] for n in sizes]
    lines.append(f"- Final held-out L by size (small to large): {', '.join(_fmt(v, '.3f') for v in final)}; "
                 f"Spearman with N = {_fmt(spearman(sizes, final), '.2f')}.")
    lines.append("- **4. Data reuse** is not part of the miniature (`configs/grids/data_reuse.py` is the study).")
    return lines


def _interval(rep: dict, name: str, spec: str) -> str:
    """' (low–high)' of the bootstrap over seeds, when the fit ran one."""
    b = rep.get("bootstrap", {}).get(name)
    return f" ({_fmt(b['low'], spec)}–{_fmt(b['high'], spec)})" if b else ""


def fit_table(fits: dict) -> list[str]:
    rows = ["K_max and N_0 with the 95 % interval of the bootstrap over seeds, where there are seeds to draw.", "",
            "| X | protocol | K_max | N_0 | R²(L) | R²(ln L) | k per size (small→large) | extrapolation |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (x, protocol), rep in fits.items():
        ks = ", ".join(_fmt(rep["k"][n], ".3f") for n in sorted(rep["k"], key=float))
        extra = ""
        if "prediction" in rep:
            p = rep["prediction"]
            extra = (f"N={_fmt(p.get('held_out_size'), '.3g')}: k {_fmt(p.get('k_extrapolated'), '.3f')} "
                     f"(alone {_fmt(p.get('k_free_fit'), '.3f')}), RMSE {_fmt(p['rmse'], '.3f')}, "
                     f"MAPE {_fmt(100 * p['mape'], '.1f')} %")
        rows.append(f"| {x} | {protocol} | {_fmt(rep['k_max'], '.3f')}{_interval(rep, 'k_max', '.3f')} | "
                    f"{_fmt(rep['n0'], '.3g')}{_interval(rep, 'n0', '.3g')} | "
                    f"{_fmt(rep['r2']['L'], '.3f')} | {_fmt(rep['r2']['log_L'], '.3f')} | {ks} | {extra} |")
    return rows


def family_table(records: dict, curves: dict) -> list[str]:
    rows = ["| size | d | F | layers | heads (kv) | N (non-emb.) | pretrain lr | pretrain loss | pretrain s "
            "| L step 0 | L end | C end | D end |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in records.items():
        s, c = r["shape"], curves.get(float(r["N"]), {})
        rows.append(f"| {name} | {s['hidden_size']} | {s['intermediate_size']} | {s['num_layers']} | "
                    f"{s['num_heads']} ({s['num_kv_heads']}) | {r['N']:,} | {_fmt(r.get('lr'), '.2g')} | "
                    f"{r['final_loss']:.3f} | "
                    f"{r['seconds']:.0f} | {_fmt(c.get('L0'), '.3f')} | {_fmt(c.get('L_end'), '.3f')} | "
                    f"{_fmt(c.get('C_end'), '.3g')} | {_fmt(c.get('D_end'), '.0f')} |")
    return rows


def write_report(layout, cfg, records: dict, fits: dict, timings: dict) -> Path:
    """Write `<out>/report.md` and return its path. `fits`: {(X, protocol): fit.json dict}."""
    table = table_lib.read_metrics_table(layout.table)
    curves = curve_summary(table)
    stages = timings["stages"]
    total = sum(s["seconds"] for s in stages.values())
    lines = [f"# RL scaling miniature: {cfg.get('name', 'miniature')}", "",
             f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
             f"- machine: {machine_line()}",
             f"- wall time (sum of stages): {total / 60:.1f} min — "
             + ", ".join(f"{k} {v['seconds']:.0f} s (load {v['load_1min_before']:.1f}→{v['load_1min_after']:.1f})"
                         for k, v in stages.items()),
             f"- levels {tuple(cfg.levels)}, pretraining {cfg.pretrain.steps} steps × {cfg.pretrain.batch_size} "
             f"documents ({cfg.corpus.wrong_answer_rate:.0%} wrong answers), GRPO recipe `{cfg.grpo_config}`",
             "", "## Family and curves", "", *family_table(records, curves), "",
             "L = 1 − held-out pass@1; C in FLOPs (6·N·tokens); D in prompts.", "",
             "## Fits (`tools/fit_scaling_law.py`)", "", *fit_table(fits), "",
             "## The paper's findings in this miniature", "", *finding_checks(fits, curves), "",
             "## Plots", ""]
    for (x, protocol) in fits:
        folder = layout.fit_dir(x, protocol)
        for png in sorted(folder.glob("*.png")):
            lines.append(f"- {x} / {protocol}: [{png.stem}]({png.relative_to(layout.out)})")
    layout.report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return layout.report
