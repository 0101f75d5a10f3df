"""Figures of the study (matplotlib, Agg backend). Every function returns a Figure;
`figure_png` turns one into PNG bytes (for files or TensorBoard images)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rl_scaling.scaling import law  # noqa: E402
from rl_scaling.scaling.curves import Curves  # noqa: E402

X_LABELS = {"C": "compute C (FLOPs)", "D": "data D (prompts)"}


def figure_png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; closes it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _size_label(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"N={n / scale:.3g}{unit}"
    return f"N={n:g}"


def _size_colours(sizes) -> dict:
    cmap = plt.get_cmap("viridis")
    return {n: cmap(i / max(len(sizes) - 1, 1)) for i, n in enumerate(sizes)}


def plot_loss_curves(fit, train: Curves, x_name: str, held_out: Curves | None = None,
                     title: str = ""):
    """L vs X per size on log-log axes: points observed (hollow where held out), lines fitted.

    Args:
      fit: a SaturatingFit (with an intercept for every size drawn).
      train: the points the law was fitted on; held_out: points it predicted (may be None).
      x_name: "C" or "D" (axis label).
    """
    every = train if held_out is None else Curves(*(np.concatenate([a, b]) for a, b in zip(
        (train.size, train.step, train.x, train.loss),
        (held_out.size, held_out.step, held_out.x, held_out.loss))))
    colours = _size_colours(every.sizes)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for n in every.sizes:
        part = train.of_size(n)
        ax.plot(part.x, part.loss, "o", ms=3, color=colours[n], label=_size_label(n))
        if held_out is not None:
            late = held_out.of_size(n)
            ax.plot(late.x, late.loss, "o", ms=4, mfc="none", color=colours[n])
        xs = np.geomspace(every.of_size(n).x.min(), every.of_size(n).x.max(), 100)
        ax.plot(xs, law.predict_loss(xs, fit.k(n), fit.e0[float(n)]), "-", color=colours[n])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(X_LABELS.get(x_name, x_name))
    ax.set_ylabel("held-out error L = 1 - pass@1")
    ax.set_title(title or f"L vs {x_name}: points observed (hollow: held out), lines fitted")
    ax.legend(fontsize=7)
    return fig


def plot_k_vs_n(fit, free_k: dict | None = None, held_out_size: float | None = None):
    """k(N) vs N: the fitted saturation curve K_max / (1 + N_0/N), K_max, and free-k points."""
    sizes = np.array(sorted(fit.e0))
    lo = min(sizes.min(), fit.n0) / 3
    hi = max(sizes.max(), fit.n0) * 3
    ns = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ax.plot(ns, fit.k(ns), "-", label=f"K_max/(1+N_0/N), K_max={fit.k_max:.3g}, N_0={fit.n0:.3g}")
    ax.axhline(fit.k_max, ls=":", color="grey")
    ax.plot(sizes, fit.k(sizes), "s", label="k(N) of the law at fitted sizes")
    if free_k:
        ax.plot(list(free_k), list(free_k.values()), "x", ms=8, label="free k per size")
    if held_out_size is not None:
        ax.axvline(held_out_size, ls="--", color="red", lw=0.8, label="held-out size")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("exponent k(N)")
    ax.legend(fontsize=7)
    return fig


def plot_predicted_vs_observed(held_out: Curves, predicted):
    """Held-out L: predicted against observed, one colour per size, with the y = x line."""
    colours = _size_colours(held_out.sizes)
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    for n in held_out.sizes:
        m = held_out.size == n
        ax.plot(held_out.loss[m], np.asarray(predicted)[m], "o", ms=3, color=colours[n],
                label=_size_label(n))
    both = np.concatenate([held_out.loss, predicted])
    span = [both.min() * 0.95, both.max() * 1.05]
    ax.plot(span, span, "k--", lw=0.8)
    ax.set_xlabel("observed L")
    ax.set_ylabel("predicted L")
    ax.set_title("held-out points")
    ax.legend(fontsize=7)
    return fig


def plot_data_reuse(table, tau_column: str = "tau", x_name: str = "D"):
    """Data reuse: final L vs tau per size (left) and L vs X per tau for the largest size (right).

    Args:
      table: metrics table with columns size, seed, step, L, `x_name` and `tau_column`
        (one variant); seeds are averaged.
    """
    size = np.asarray(table["size"], dtype=np.float64)
    tau = np.asarray(table[tau_column], dtype=np.float64)
    step = np.asarray(table["step"])
    loss = np.asarray(table["L"], dtype=np.float64)
    x = np.asarray(table[x_name], dtype=np.float64)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    colours = _size_colours(np.unique(size))
    for n in np.unique(size):
        taus = np.unique(tau[size == n])
        finals = []
        for t in taus:
            m = (size == n) & (tau == t)
            finals.append(loss[m & (step == step[m].max())].mean())
        left.plot(taus, finals, "o-", color=colours[n], label=_size_label(n))
    left.set_xscale("log")
    left.set_xlabel(f"repeats per problem {tau_column}")
    left.set_ylabel("final L (seed mean)")
    left.legend(fontsize=7)
    largest = size.max()
    tau_colours = plt.get_cmap("plasma")(np.linspace(0, 0.9, len(np.unique(tau))))
    for colour, t in zip(tau_colours, np.unique(tau)):
        m = (size == largest) & (tau == t) & (step > 0)
        steps = np.unique(step[m])
        right.plot([x[m & (step == s)].mean() for s in steps],
                   [loss[m & (step == s)].mean() for s in steps], "-", color=colour,
                   label=f"{tau_column}={t:g}")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel(X_LABELS.get(x_name, x_name) + " (samples incl. repeats)")
    right.set_ylabel("L")
    right.set_title(_size_label(largest))
    right.legend(fontsize=7)
    return fig


def plot_reuse_fit(reuse: dict):
    """Finding 4: final L against tau per size (rl_scaling.scaling.reuse.fit_reuse's dict): every run as a
    small dot, the seed means joined, the fitted line in ln tau dashed, and L before RL as a dotted level."""
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    sizes = sorted(reuse["sizes"], key=float)
    colours = _size_colours(sizes)
    for n in sizes:
        s, colour = reuse["sizes"][n], colours[n]
        runs = s["runs"]
        ax.plot(runs["tau"], runs["L_final"], ".", color=colour, alpha=0.5, ms=5)
        ax.plot(s["taus"], s["mean_L_final"], "o-", color=colour,
                label=f"{_size_label(float(n))}: {s['verdict']}")
        grid = np.geomspace(min(s["taus"]), max(s["taus"]), 50)
        ax.plot(grid, s["line"]["a"] + s["line"]["b"] * np.log(grid), "--", color=colour, lw=0.9)
        if np.isfinite(s["L0"]):
            ax.axhline(s["L0"], color=colour, ls=":", lw=0.9)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("repeats per problem tau (training samples fixed)")
    ax.set_ylabel("final held-out L (dots: seeds)")
    ax.set_title("data reuse; dotted: L before RL, dashed: a + b ln tau")
    ax.legend(fontsize=7)
    return fig
