"""Fetch and convert SmolLM2-135M-Instruct (or any local GGUF file) into an HF model directory.

  python tools/convert_smollm2.py                      # SmolLM2 into the default cache; prints its path
  python tools/convert_smollm2.py --out DIR            # SmolLM2 with DIR as the cache directory
                                                       #   (DIR/SmolLM2-135M-Instruct, DIR/gguf/...)
  python tools/convert_smollm2.py --gguf FILE --out DIR  # convert a local GGUF file into DIR

The default cache is $QRR_CACHE, else <repo root>/artifacts/models.
"""

from __future__ import annotations

import argparse
import sys

from common.checkpoint.gguf import convert_gguf_to_hf, ensure_smollm2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gguf", help="a local GGUF file to convert (then --out is the output directory)")
    parser.add_argument("--out", help="cache directory for SmolLM2, or output directory with --gguf")
    parser.add_argument("--overwrite", action="store_true", help="with --gguf: replace an existing --out")
    args = parser.parse_args(argv)

    try:
        if args.gguf:
            if not args.out:
                parser.error("--gguf needs --out (the output model directory)")
            path = convert_gguf_to_hf(args.gguf, args.out, overwrite=args.overwrite)
        else:
            path = ensure_smollm2(args.out)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
