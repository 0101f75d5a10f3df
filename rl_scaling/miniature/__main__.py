"""The miniature study in one command (see rl_scaling/miniature/__init__.py).

    python -m rl_scaling.miniature --out runs/miniature [--config configs/miniature/study.py] \
        [--config.pretrain.steps=200 ...]

Rerunning with the same --out resumes: finished stages and finished GRPO runs are skipped.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO_ROOT / "configs/miniature/study.py"),
                                          "study config file (configs/miniature/*.py)", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "output directory (data, checkpoints, runs, table, fits, report)")


def main(argv):
    del argv
    from rl_scaling.miniature.study import run_study

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    start = time.perf_counter()
    result = run_study(_CONFIG.value, _OUT.value)
    print(f"miniature done in {(time.perf_counter() - start) / 60:.1f} min (this invocation); "
          f"report: {result['report']}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["out"])
    app.run(main)
