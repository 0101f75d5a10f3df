"""Rebuild a PsySafe run's report from its results (agent_safety.report.write_report).

    python tools/psysafe_report.py --workdir=DIR   # reads DIR/dialogues.jsonl, writes DIR/report.md, DIR/plots/
"""

from __future__ import annotations

import argparse

from agent_safety.report import write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory holding dialogues.jsonl")
    print(write_report(parser.parse_args(argv).workdir))


if __name__ == "__main__":
    main()
