"""Fit the RL scaling law to a metrics table and write fit.json plus plots (rl_scaling.scaling.fit_table).

    python tools/fit_scaling_law.py --metrics runs/table.csv --x C --protocol full --out runs/fit_c \
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

from rl_scaling.scaling import fit as fit_lib
from rl_scaling.scaling import protocols
from rl_scaling.scaling.fit_table import FitRequest, fit_table
from rl_scaling.scaling.report import summary_text


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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def fit_request(args: argparse.Namespace) -> FitRequest:
    """The FitRequest of parsed arguments."""
    bounds = (fit_lib.PAPER_BOUNDS if args.paper_bounds
              else fit_lib.FitBounds(args.k_max_bounds, args.log10_n0_bounds, args.e_bounds))
    return FitRequest(metrics=args.metrics, x=args.x, out=args.out, protocol=args.protocol,
                      objective=args.objective, variant=args.variant, select=_where(args.select),
                      bootstrap=args.bootstrap, intra_fraction=args.intra_fraction, bounds=bounds,
                      alternative=not args.no_alternative, seed=args.seed, tensorboard=not args.no_tensorboard)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        rep = fit_table(fit_request(args))
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_text(rep))
    print(f"wrote {pathlib.Path(args.out) / 'fit.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
