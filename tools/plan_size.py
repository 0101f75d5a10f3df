"""Which model size gives the lowest predicted error for a compute (or data) budget?

    python tools/plan_size.py --fit runs/fit_c/fit.json --budget 1e21 --x C [--sizes 0.5e9,1.5e9]

Without --sizes the candidates are the fitted sizes; other sizes get E(N) interpolated in ln N
between fitted sizes (outside the fitted range: refused). See rl_scaling/scaling/planner.py.
"""

from __future__ import annotations

import argparse
import sys

from rl_scaling.scaling import planner, report


def _sizes(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes expects numbers separated by commas, "
                                         f"got {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fit", required=True, help="fit.json written by tools/fit_scaling_law.py")
    p.add_argument("--budget", required=True, type=float, help="FLOPs (x=C) or prompts (x=D)")
    p.add_argument("--x", required=True, choices=("C", "D"), help="the budget's kind")
    p.add_argument("--sizes", type=_sizes, default=None, help="candidate parameter counts")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        fitted, rep = report.load_fit_report(args.fit)
        if rep["x"] != args.x:
            raise ValueError(f"{args.fit} is a fit of L vs {rep['x']}, but the budget is in "
                             f"{args.x}: fit the law in {args.x} first")
        rows = planner.plan_budget(fitted, args.budget, args.sizes)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(planner.format_plan(rows, args.budget, args.x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
