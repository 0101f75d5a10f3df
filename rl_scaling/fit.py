"""Fit the RL scaling law to a metrics table and write fit.json plus plots.

    python -m rl_scaling.fit --metrics runs/table.csv --x C --protocol full --out runs/fit_c \
        [--objective linear|log] [--variant base] [--bootstrap 200] [--select tau=1]

Writes DIR/fit.json (see rl_scaling/scaling/report.py for the keys), DIR/loss_vs_<X>.png,
DIR/k_vs_n.png, DIR/predicted_vs_observed.png (inter/intra) and DIR/data_reuse.png (when the
table has a varying `tau` column), the same images to TensorBoard under DIR/tensorboard, and
prints a short summary.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from rl_scaling.scaling import alternative, bootstrap, curves, plots, protocols, report, table
from rl_scaling.scaling import fit as fit_lib


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'LOW,HIGH', got {text!r}") from None
    return lo, hi


def _where(items: list[str]) -> dict:
    where = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--select expects COLUMN=VALUE, got {item!r}")
        column, value = item.split("=", 1)
        where[column] = value
    return where


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rl_scaling.fit", description=__doc__.split("\n")[0])
    p.add_argument("--metrics", required=True, help="metrics table (.csv or .parquet)")
    p.add_argument("--x", required=True, choices=("C", "D"), help="C = compute, D = data")
    p.add_argument("--protocol", default="full", choices=protocols.PROTOCOLS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--objective", default="linear", choices=fit_lib.OBJECTIVES,
                   help="linear: the paper's MSE of L; log: MSE of ln L")
    p.add_argument("--variant", default=None, help="base/instruct; needed if the table has several")
    p.add_argument("--select", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep only rows with this setting (repeatable), e.g. tau=1")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="bootstrap over seeds with B replicates (0 = off)")
    p.add_argument("--intra-fraction", type=float, default=0.25,
                   help="share of every curve's evaluation points fitted by protocol intra")
    p.add_argument("--k-max-bounds", type=_pair, default=(0.0, 2.0), metavar="LO,HI")
    p.add_argument("--log10-n0-bounds", type=_pair, default=None, metavar="LO,HI",
                   help="default: [log10 N_min - 2, log10 N_max + 2] of the data")
    p.add_argument("--e-bounds", type=_pair, default=(-np.inf, np.inf), metavar="LO,HI")
    p.add_argument("--paper-bounds", action="store_true",
                   help="K_max in [0,2], N_0 in [1e8,1e11], E in [-10,10] (overrides the above)")
    p.add_argument("--no-alternative", action="store_true", help="skip the appendix-form fit")
    p.add_argument("--seed", type=int, default=0, help="optimiser and bootstrap seed")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="skip writing the plots as TensorBoard images to DIR/tensorboard")
    return p.parse_args(argv)


def _write_tensorboard(logdir: pathlib.Path, png_paths: dict) -> None:
    """The plots as TensorBoard images (tag scaling/<name>, step 0) in `logdir`."""
    from common.metrics_writer import MetricsWriter

    with MetricsWriter(logdir) as writer:
        for name, path in png_paths.items():
            writer.write_image(0, f"scaling/{name}", path)


def summary(rep: dict) -> str:
    """A few human-readable lines of a fit.json dict."""
    lines = [f"{rep['protocol']} fit of L vs {rep['x']} ({rep['variant']}, objective "
             f"{rep['objective']}): K_max = {rep['k_max']:.4g}, N_0 = {rep['n0']:.4g}, "
             f"R2(L) = {rep['r2']['L']:.4f}, R2(ln L) = {rep['r2']['log_L']:.4f}"]
    free = rep.get("free_k", {}).get("k", {})
    for n, e in rep["e0"].items():
        extra = f"  free k = {free[n]:.4f}" if n in free else ""
        lines.append(f"  N = {float(n):.4g}: k = {rep['k'][n]:.4f}  E = {e:.4f}{extra}")
    if "prediction" in rep:
        pred = rep["prediction"]
        lines.append(f"held-out prediction: RMSE(L) = {pred['rmse']:.4g}, "
                     f"MAPE(L) = {100 * pred['mape']:.2f} % over {pred['held_out_points']} points")
    if "bootstrap" in rep:
        b = rep["bootstrap"]
        for name, label in (("k_max", "K_max"), ("n0", "N_0")):
            v = b[name]
            lines.append(f"bootstrap over seeds ({b['replicates']} draws, "
                         f"{100 * b['level']:.0f} %): {label} sd {v['std']:.3g}, "
                         f"percentile [{v['low']:.4g}, {v['high']:.4g}], "
                         f"t [{v['t_low']:.4g}, {v['t_high']:.4g}]")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    """Do the fit described by parsed arguments; returns the fit.json dict."""
    out = pathlib.Path(args.out)
    full_table = table.read_metrics_table(args.metrics)
    rows_of_variant, variant = table.variant_rows(full_table, args.variant)
    where = _where(args.select)
    selected = table.filter_table(rows_of_variant, where) if where else rows_of_variant
    rows = curves.seed_rows_from_table(selected, args.x)
    points = curves.average_seeds(rows)
    if args.paper_bounds:
        bounds = fit_lib.PAPER_BOUNDS
    else:
        bounds = fit_lib.FitBounds(args.k_max_bounds, args.log10_n0_bounds, args.e_bounds)
    result = protocols.run_protocol(points, args.protocol, args.objective, bounds, args.seed,
                                    args.intra_fraction)
    # Free k per size needs no other size, so under inter it may see the held-out size too.
    free = fit_lib.fit_free_k(points if args.protocol == "inter" else result.train,
                              args.objective, bounds.k_max, bounds.e)
    alt = (None if args.no_alternative
           else alternative.fit_alternative_law(result.train, seed=args.seed))
    boot = (bootstrap.bootstrap_over_seeds(rows, args.protocol, args.objective, bounds,
                                           args.bootstrap, args.seed, args.intra_fraction)
            if args.bootstrap else None)
    rep = report.fit_report(result, args.x, variant, bounds, free, alt, boot)
    report.write_fit_report(rep, out / "fit.json")

    pngs = {f"loss_vs_{args.x}": plots.figure_png(
                plots.plot_loss_curves(result.fit, result.train, args.x, result.held_out)),
            "k_vs_n": plots.figure_png(plots.plot_k_vs_n(
                result.fit, free.k, result.details.get("held_out_size")))}
    if result.held_out is not None:
        pngs["predicted_vs_observed"] = plots.figure_png(
            plots.plot_predicted_vs_observed(result.held_out, result.predicted))
    if "tau" in rows_of_variant and len(np.unique(rows_of_variant["tau"])) > 1:
        pngs["data_reuse"] = plots.figure_png(plots.plot_data_reuse(rows_of_variant, "tau", args.x))
    paths = {name: out / f"{name}.png" for name in pngs}
    for name, png in pngs.items():
        paths[name].write_bytes(png)
    if not args.no_tensorboard:
        _write_tensorboard(out / "tensorboard", paths)
    return rep


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        rep = run(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(rep))
    print(f"wrote {pathlib.Path(args.out) / 'fit.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
