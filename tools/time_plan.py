"""Time plan: the estimated seconds of one step of the RL scaling recipe per Qwen2.5 size and slice, and the
chip-hours of the paper's ~105-step run (a roofline estimate: rl_scaling/time_plan.py).

    python tools/time_plan.py                                   # every size: its recommended slice + GPU presets
    python tools/time_plan.py --sizes qwen2_5_7b --presets v5p-64,v6e-64 --mfu 0.5
    python tools/time_plan.py --out docs/time_plan.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    from rl_scaling.time_plan import Shares
    from rl_scaling.time_plan_report import MEAN_LENGTHS, RUN_STEPS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_names, default=None, help="Qwen2.5 sizes (default: all seven)")
    p.add_argument("--presets", type=_names, default=None,
                   help="mesh presets (default: each size's recommended slice and every GPU preset)")
    p.add_argument("--mfu", type=float, default=Shares.mfu, help="share of peak bf16 FLOP/s")
    p.add_argument("--hbm-share", type=float, default=Shares.hbm, help="share of HBM bandwidth in decode")
    p.add_argument("--ici-share", type=float, default=Shares.ici, help="share of interconnect bandwidth")
    p.add_argument("--mean-prompt", type=int, default=MEAN_LENGTHS.prompt, help="mean prompt tokens")
    p.add_argument("--mean-response", type=int, default=MEAN_LENGTHS.response, help="mean response tokens")
    p.add_argument("--steps", type=int, default=RUN_STEPS, help="steps of a run (chip-hours)")
    p.add_argument("--out", default=None, help="markdown file (default: print)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from common.mesh_presets import SIZES
    from rl_scaling.time_plan import Lengths, Shares
    from rl_scaling.time_plan_report import default_presets, document

    args = parse_args(argv)
    try:
        sizes = args.sizes or list(SIZES)
        presets_of = (lambda size: args.presets) if args.presets else default_presets
        shares = Shares(mfu=args.mfu, hbm=args.hbm_share, ici=args.ici_share)
        mean = Lengths(args.mean_prompt, args.mean_response)
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        command = "python tools/time_plan.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        text = document(sizes, presets_of, shares, mean, args.steps, command.strip())
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
