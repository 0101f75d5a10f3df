"""Which model size gives the lowest predicted error for a compute (or data, or chip-hour) budget?

    python tools/plan_size.py --fit runs/fit_c/fit.json --budget 1e21 --x C [--sizes 0.5e9,1.5e9]
    python tools/plan_size.py --fit runs/fit_c/fit.json --budget 5000 --x chip-hours [--slice v5p-64] [--lengths max]

Without --sizes the candidates are the fitted sizes; other sizes get E(N) interpolated in ln N
between fitted sizes (outside the fitted range: refused). See rl_scaling/scaling/planner.py.

A chip-hour budget needs a fit in C and Qwen2.5 candidate sizes (N the non-embedding or the nominal
count): for each size it becomes C = chip-hours x 3600 x the C per chip-second of one recipe step on
--slice (default: the size's recommended slice) at --lengths (mean: the assumed mean lengths; max: the
recipe's longest), from the time plan (rl_scaling/time_plan.py, docs/time_plan.md). Each size gets its own C.
"""

from __future__ import annotations

import argparse
import math
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
    p.add_argument("--budget", required=True, type=float, help="FLOPs (x=C), prompts (x=D) or chip-hours")
    p.add_argument("--x", required=True, choices=("C", "D", "chip-hours"), help="the budget's kind")
    p.add_argument("--sizes", type=_sizes, default=None, help="candidate parameter counts")
    p.add_argument("--slice", default=None, help="chip-hours: the mesh preset (default: each size's recommended)")
    p.add_argument("--lengths", default=None, choices=("mean", "max"),
                   help="chip-hours: the step's sequence lengths (default: mean)")
    return p.parse_args(argv)


def chip_hour_plan(fitted, args) -> tuple[list, list[float], list[str]]:
    """(rows, C budget per row, one line per size saying how its chip-hours became C)."""
    from common.mesh_presets import get_mesh_preset
    from rl_scaling.time_plan_report import chip_hour_budget, qwen_size_for

    if not math.isfinite(args.budget) or args.budget <= 0:
        raise ValueError(f"a chip-hour budget must be positive and finite, got {args.budget:g}")
    if args.slice is not None:
        get_mesh_preset(args.slice)
    rows, budgets, lines = [], [], []
    for n in sorted(args.sizes or fitted.e0):
        conversion = chip_hour_budget(qwen_size_for(n), args.slice, args.budget, args.lengths or "mean")
        rows += planner.plan_budget(fitted, conversion.flops, [n])
        budgets.append(conversion.flops)
        lines.append(f"N = {n:.4g}: {conversion.describe()}")
    return rows, budgets, lines


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.x != "chip-hours" and (args.slice or args.lengths):
            raise ValueError("--slice and --lengths apply to a budget in chip-hours (--x chip-hours)")
        fitted, rep = report.load_fit_report(args.fit)
        law_x = "C" if args.x == "chip-hours" else args.x
        if rep["x"] != law_x:
            raise ValueError(f"{args.fit} is a fit of L vs {rep['x']}, but the budget is in "
                             f"{args.x}" + (" (converted to C)" if args.x == "chip-hours" else "")
                             + f": fit the law in {law_x} first")
        if args.x == "chip-hours":
            rows, budget, lines = chip_hour_plan(fitted, args)
            print(f"{args.budget:g} chip-hours as C, per size (the time plan's C per chip-second at "
                  f"{args.lengths or 'mean'} lengths; docs/time_plan.md):")
            print("\n".join(f"  {line}" for line in lines))
        else:
            rows, budget = planner.plan_budget(fitted, args.budget, args.sizes), args.budget
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    print(planner.format_plan(rows, budget, law_x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
