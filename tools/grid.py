"""Run an experiment grid resumably, or gather its runs' metrics into one table (rl_scaling.grid).

    python tools/grid.py run    --grid configs/grids/qwen2_5_family.py --root runs/family
    python tools/grid.py run    --grid ... --root ... --print   # commands only, for remote hardware
    python tools/grid.py gather --grid ... --root ... --out runs/family/table.csv

Each run is `python tools/train_grpo.py` in <root>/<run_id>; finished runs (DONE) are skipped, so a
killed or crashed runner resumes by running it again. The grid config's keys: rl_scaling/grid/__init__.py.
"""

from __future__ import annotations

import argparse
import signal
import sys

from rl_scaling.grid.expand import load_grid_config
from rl_scaling.grid.gather import gather
from rl_scaling.grid.run import pending_commands, run_grid
from rl_scaling.scaling.table import table_length, write_metrics_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("run", "gather"))
    p.add_argument("--grid", help="grid config file (python, get_config()); optional for gather")
    p.add_argument("--root", required=True, help="directory holding one workdir per run")
    p.add_argument("--only", default=None, help="run: regular expression on run ids")
    p.add_argument("--print", action="store_true",
                   help="run: print the commands of unfinished runs instead of running them")
    p.add_argument("--stop-on-failure", action="store_true")
    p.add_argument("--out", help="gather: table path (.csv or .parquet)")
    p.add_argument("--include-unfinished", action="store_true", help="gather: runs without DONE too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # A SIGTERM stops the current trainer too (the runner's cleanup) instead of orphaning it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        grid = load_grid_config(args.grid) if args.grid else None
        if args.action == "run" and grid is None:
            raise ValueError("run needs --grid")
        if args.action == "run" and args.print:
            print("\n".join(pending_commands(grid, args.root, args.only)))
        elif args.action == "run":
            summary = run_grid(grid, args.root, args.only, args.stop_on_failure)
            print(f"ran {len(summary['ran'])}, skipped {len(summary['skipped'])} finished, "
                  f"failed {len(summary['failed'])}: {sorted(summary['failed'])}")
            return 1 if summary["failed"] else 0
        else:
            if not args.out:
                raise ValueError("gather needs --out TABLE.csv|.parquet")
            table = gather(args.root, grid, args.include_unfinished)
            print(f"wrote {write_metrics_table(table, args.out)} ({table_length(table)} rows)")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
