"""A metrics table -> the fitted law: fit.json, the figures and their TensorBoard images in one directory.

What `tools/fit_scaling_law.py` runs (and the miniature study, per X and protocol): read the table, keep
one variant and the selected settings, average the seeds, fit the saturating law under a protocol, the
free-k and appendix-form fits beside it, optionally a bootstrap over seeds; write OUT/fit.json (keys:
report.py), OUT/loss_vs_<X>.png, OUT/k_vs_n.png, OUT/predicted_vs_observed.png (inter/intra) and
OUT/data_reuse.png (when the table has a varying `tau` column).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from rl_scaling.scaling import alternative, bootstrap, curves, plots, protocols, report, table
from rl_scaling.scaling import fit as fit_lib


@dataclasses.dataclass(frozen=True)
class FitRequest:
    """One fit: the table, what to fit, where to write it."""

    metrics: str | pathlib.Path  # .csv or .parquet
    x: str  # "C" (compute) or "D" (data)
    out: str | pathlib.Path  # output directory
    protocol: str = "full"  # protocols.PROTOCOLS
    objective: str = "linear"  # "linear": the paper's MSE of L; "log": MSE of ln L
    variant: str | None = None  # base/instruct; needed if the table has several
    select: dict = dataclasses.field(default_factory=dict)  # {column: value}: keep only these rows
    bootstrap: int = 0  # replicates of the bootstrap over seeds (0 = off)
    intra_fraction: float = 0.25  # share of every curve's points fitted by protocol intra
    bounds: fit_lib.FitBounds = fit_lib.FitBounds()
    alternative: bool = True  # also fit the appendix form
    seed: int = 0  # optimiser and bootstrap seed
    tensorboard: bool = True  # the figures as TensorBoard images under OUT/tensorboard


def _write_tensorboard(logdir: pathlib.Path, png_paths: dict) -> None:
    """The plots as TensorBoard images (tag scaling/<name>, step 0) in `logdir`."""
    from common.metrics_writer import MetricsWriter

    with MetricsWriter(logdir) as writer:
        for name, path in png_paths.items():
            writer.write_image(0, f"scaling/{name}", path)


def fit_table(request: FitRequest) -> dict:
    """Do the fit; returns the fit.json dict. Raises ValueError / KeyError / FileNotFoundError naming bad input."""
    r = request
    out = pathlib.Path(r.out)
    full_table = table.read_metrics_table(r.metrics)
    rows_of_variant, variant = table.variant_rows(full_table, r.variant)
    selected = table.filter_table(rows_of_variant, r.select) if r.select else rows_of_variant
    rows = curves.seed_rows_from_table(selected, r.x)
    points = curves.average_seeds(rows)
    result = protocols.run_protocol(points, r.protocol, r.objective, r.bounds, r.seed, r.intra_fraction)
    # Free k per size needs no other size, so under inter it may see the held-out size too.
    free = fit_lib.fit_free_k(points if r.protocol == "inter" else result.train, r.objective, r.bounds.k_max,
                              r.bounds.e)
    alt = alternative.fit_alternative_law(result.train, seed=r.seed) if r.alternative else None
    boot = (bootstrap.bootstrap_over_seeds(rows, r.protocol, r.objective, r.bounds, r.bootstrap, r.seed,
                                           r.intra_fraction)
            if r.bootstrap else None)
    rep = report.fit_report(result, r.x, variant, r.bounds, free, alt, boot)
    report.write_fit_report(rep, out / "fit.json")

    pngs = {f"loss_vs_{r.x}": plots.figure_png(plots.plot_loss_curves(result.fit, result.train, r.x, result.held_out)),
            "k_vs_n": plots.figure_png(plots.plot_k_vs_n(result.fit, free.k, result.details.get("held_out_size")))}
    if result.held_out is not None:
        pngs["predicted_vs_observed"] = plots.figure_png(
            plots.plot_predicted_vs_observed(result.held_out, result.predicted))
    if "tau" in rows_of_variant and len(np.unique(rows_of_variant["tau"])) > 1:
        pngs["data_reuse"] = plots.figure_png(plots.plot_data_reuse(rows_of_variant, "tau", r.x))
    paths = {name: out / f"{name}.png" for name in pngs}
    for name, png in pngs.items():
        paths[name].write_bytes(png)
    if r.tensorboard:
        _write_tensorboard(out / "tensorboard", paths)
    return rep
