"""Run a PsySafe experiment grid and write its report (agent_safety.run.run_experiment).

    python tools/psysafe.py --config=configs/psysafe/scripted.py --workdir=DIR [--config.x=y ...]

Grid: tasks x systems x attacks x defences x seeds. Each finished dialogue is appended to
DIR/dialogues.jsonl at once, so rerunning the same command skips finished dialogues and a killed run loses
only those in flight. A dialogue whose model request failed for good is stored as failed and retried
by the next run; the command exits with status 1 while any dialogue of the grid is failed. DIR/report.md
and DIR/plots/ are written at the end (`tools/psysafe_report.py` rebuilds them).
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "path to a configs/psysafe/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (results, report, plots)")


def main(argv) -> None:
    del argv
    from common.platform_flags import apply_platform_defaults

    apply_platform_defaults()  # before JAX starts: XLA reads its GPU flags then
    from agent_safety.run import run_experiment
    from common.compile_cache import enable_compilation_cache

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    enable_compilation_cache()
    summary = run_experiment(_CONFIG.value, _WORKDIR.value)
    print(summary.report)
    if summary.failed:
        print(f"{summary.failed} of {summary.grid} dialogues failed (see {summary.report}); "
              "rerun the same command to retry them", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
