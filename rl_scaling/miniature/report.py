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


EDGE_MARGIN_DECADES = 0.1  # a bootstrap end this close to a bound of the N_0 search sits on the edge


def n0_pinning(rep: dict) -> dict | None:
    """Where the bootstrap interval of N_0 sits in the fit's search range (None without a bootstrap):
    {"low", "high" (the 95 % interval), "search" [lo, hi], "pinned" (both ends more than EDGE_MARGIN_DECADES
    inside the range: the data, not the search box, bound N_0)}."""
    boot = rep.get("bootstrap", {}).get("log10_n0")
    bounds = rep.get("bounds", {}).get("log10_n0")
    if not boot or not bounds:
        return None
    pinned = boot["low"] > bounds[0] + EDGE_MARGIN_DECADES and boot["high"] < bounds[1] - EDGE_MARGIN_DECADES
    return {"low": 10.0 ** boot["low"], "high": 10.0 ** boot["high"], "search": [10.0 ** b for b in bounds],
            "pinned": bool(pinned)}


def finding_1_verdict(rho: float | None) -> str:
    """Per-size free exponents against N: Spearman >= 0.8 'shown', > 0 'weakly shown', else 'not shown'."""
    if rho is None or rho <= 0:
        return "not shown"
    return "shown" if rho >= 0.8 else "weakly shown"


def finding_2_verdict(r2: float | None, mape: float | None) -> str:
    """R²(L) of the shared law >= 0.9 and (when there is an inter fit) its prediction of the largest size
    within 10 % MAPE: 'shown'; else 'not shown'."""
    ok = r2 is not None and r2 >= 0.9 and (mape is None or mape <= 0.10)
    return "shown" if ok else "not shown"


def finding_3_verdict(pin: dict | None, largest_n: float) -> str:
    """'not pinned' (no bootstrap, or its N_0 interval reaches an edge of the search range), 'shown' (pinned and
    the whole interval at or below the largest N: k saturates inside the family), else 'growth only'."""
    if pin is None or not pin["pinned"]:
        return "not pinned"
    return "shown" if pin["high"] <= largest_n else "growth only"


def finding_checks(fits: dict, curves: dict, reuse: dict | None = None) -> list[str]:
    """One markdown bullet per finding of the paper, each with its stated test and verdict."""
    lines = []
    sizes = sorted(curves)
    inter_mape = fits.get(("C", "inter"), {}).get("prediction", {}).get("mape")
    for x in ("C", "D"):
        rep = fits.get((x, "full"))
        if rep is None:
            continue
        free = {float(n): k for n, k in rep.get("free_k", {}).get("k", {}).items()}
        ks = [free[n] for n in sizes if n in free]
        rho = spearman(sizes[:len(ks)], ks)
        lines.append(f"- **1. Larger models learn more per unit of {x}: {finding_1_verdict(rho)}** (Spearman "
                     f"≥ 0.8 shown, > 0 weakly): per-size free fits give k = "
                     f"{', '.join(_fmt(k, '.3f') for k in ks)} (small to large); Spearman rank correlation of k "
                     f"with N = {_fmt(rho, '.2f')}.")
        mape = inter_mape if x == "C" else fits.get(("D", "inter"), {}).get("prediction", {}).get("mape")
        lines.append(f"- **2. Power law in {x}: {finding_2_verdict(rep['r2']['L'], mape)}** (R²(L) ≥ 0.9 and the "
                     f"inter prediction within 10 % MAPE): R²(L) = {_fmt(rep['r2']['L'], '.3f')}, R²(ln L) = "
                     f"{_fmt(rep['r2']['log_L'], '.3f')}, inter MAPE = "
                     f"{_fmt(None if mape is None else 100 * mape, '.1f')} %.")
        if x == "C":
            k_big = rep["k"].get(max(rep["k"], key=float)) if rep["k"] else None
            share = None if not rep["k_max"] or k_big is None else k_big / rep["k_max"]
            pin = n0_pinning(rep)
            where = ("no bootstrap" if pin is None else
                     f"95 % interval {_fmt(pin['low'], '.3g')}–{_fmt(pin['high'], '.3g')} in the search range "
                     f"{_fmt(pin['search'][0], '.3g')}–{_fmt(pin['search'][1], '.3g')}: "
                     + ("excludes both edges" if pin["pinned"] else "reaches an edge (this run cannot pin N_0)"))
            lines.append(f"- **3. k(N) grows and saturates (fit on C): {finding_3_verdict(pin, sizes[-1])}** "
                         f"(shown: the N_0 interval excludes the search edges and lies at or below the largest N): "
                         f"K_max = {_fmt(rep['k_max'], '.3f')}, N_0 = {_fmt(rep['n0'], '.3g')} ({where}) against "
                         f"N from {sizes[0]:.3g} to {sizes[-1]:.3g}; the largest model reaches k/K_max = "
                         f"{_fmt(share, '.2f')}.")
    final = [curves[n]["L_end"] for n in sizes]
    lines.append(f"- Final held-out L by size (small to large): {', '.join(_fmt(v, '.3f') for v in final)}; "
                 f"Spearman with N = {_fmt(spearman(sizes, final), '.2f')}.")
    if reuse is None:
        lines.append("- **4. Data reuse**: not run (`reuse.taus` is empty).")
        return lines
    for n, r in sorted(reuse["sizes"].items(), key=lambda item: float(item[0])):
        lines.append(f"- **4. Data reuse, N = {float(n):,.0f}: {r['verdict']}** ({reuse['rule']}): gain of RL at "
                     f"tau = {r['taus'][0]:g} {_fmt(r['gain'], '.3f')}; fitted rise of final L to tau = "
                     f"{r['taus'][-1]:g} {_fmt(r['rise'], '.3f')} ({_fmt(r['rise_low'], '.3f')} to "
                     f"{_fmt(r['rise_high'], '.3f')}); share of the gain kept at tau = {r['taus'][-1]:g}: "
                     f"{_fmt(r['kept'], '.2f')}.")
    return lines


def reuse_table(reuse: dict) -> list[str]:
    """Final L (seed mean, then each seed) per tau and size, and what each tau trains on (seed 0's subset)."""
    sizes = sorted(reuse["sizes"], key=float)
    first_seed = min(row["seed"] for row in reuse["subsets"])
    subsets = {row["tau"]: row for row in reuse["subsets"] if row["seed"] == first_seed}
    rows = [f"{reuse['num_steps']} GRPO steps per run; L before RL (seed mean): "
            + ", ".join(f"N = {float(n):,.0f}: {_fmt(reuse['sizes'][n]['L0'], '.3f')}" for n in sizes), "",
            "| tau | samples | distinct problems | distinct questions | "
            + " | ".join(f"final L, N = {float(n):,.0f} (seeds)" for n in sizes) + " |",
            "| --- | --- | --- | --- | " + " | ".join("---" for _ in sizes) + " |"]
    for i, tau in enumerate(reuse["sizes"][sizes[0]]["taus"]):
        sub = subsets.get(int(tau), {})
        cells = []
        for n in sizes:
            r = reuse["sizes"][n]
            seeds = [v for t, v in zip(r["runs"]["tau"], r["runs"]["L_final"]) if t == tau]
            cells.append(f"{_fmt(r['mean_L_final'][i], '.3f')} ({', '.join(_fmt(v, '.3f') for v in seeds)})")
        rows.append(f"| {tau:g} | {sub.get('samples', 'n/a')} | {sub.get('problems', 'n/a')} | "
                    f"{sub.get('questions', 'n/a')} | " + " | ".join(cells) + " |")
    return rows


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


def write_report(layout, cfg, records: dict, fits: dict, timings: dict, reuse: dict | None = None) -> Path:
    """Write `<out>/report.md` and return its path. `fits`: {(X, protocol): fit.json dict}; `reuse`: the reuse
    arm's fit (rl_scaling.scaling.reuse.fit_reuse with subsets, study.fit_reuse_arm) or None."""
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
             *(["## Data reuse (finding 4)", "", *reuse_table(reuse), ""] if reuse else []),
             "## The paper's findings in this miniature", "", *finding_checks(fits, curves, reuse), "",
             "## Plots", ""]
    for (x, protocol) in fits:
        folder = layout.fit_dir(x, protocol)
        for png in sorted(folder.glob("*.png")):
            lines.append(f"- {x} / {protocol}: [{png.stem}]({png.relative_to(layout.out)})")
    if reuse:
        lines.append(f"- reuse: [data_reuse]({(layout.reuse / 'data_reuse.png').relative_to(layout.out)})")
    layout.report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return layout.report
