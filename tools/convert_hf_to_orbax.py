"""Convert a Hugging Face checkpoint into our checkpoint once, streamed, to where every worker reads its shards.

    python tools/convert_hf_to_orbax.py --hf models/Qwen2.5-7B-Instruct --out /mnt/qrr-bucket/models/Qwen2.5-7B-Instruct
    python tools/convert_hf_to_orbax.py --hf /mnt/qrr-bucket/hf/Qwen2.5-72B-Instruct --out gs://my-bucket/models/Qwen2.5-72B-Instruct

--hf: an HF directory (config.json + safetensors; a bucket mounted with gcsfuse works: the files are
memory-mapped and read once). --out: a directory, or a gs:// path (tensorstore writes it with the machine's
Google credentials); workers read it where the bucket is mounted. Host memory stays at a few chunks of
--chunk-mib whatever the model's size (common/checkpoint/hf_to_orbax.py). Training then points
`--config.model.path` at it; `common.load_pretrained` and the trainer load it onto any mesh.
"""

from __future__ import annotations

import argparse
import sys
import time

from common.checkpoint.hf_to_orbax import CHUNK_BYTES, IN_FLIGHT, convert_hf_to_orbax


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf", required=True, help="HF checkpoint directory (config.json + *.safetensors)")
    p.add_argument("--out", required=True, help="checkpoint directory or gs://bucket/path")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                   help="stored dtype (default: the checkpoint's own)")
    p.add_argument("--chunk-mib", type=float, default=CHUNK_BYTES / 2**20, help="most MiB per stored chunk")
    p.add_argument("--in-flight", type=int, default=IN_FLIGHT, help="chunks written at once")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t = time.perf_counter()
    summary = convert_hf_to_orbax(args.hf, args.out, dtype=args.dtype, chunk_bytes=int(args.chunk_mib * 2**20),
                                  in_flight=args.in_flight)
    print(f"wrote {summary['parameters']} parameters, {summary['bytes'] / 2**30:.2f} GiB, to {summary['url']} "
          f"in {time.perf_counter() - t:.0f} s" + ("" if summary["tokenizer"] else " (no tokenizer in --hf)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
