#!/usr/bin/env bash
# The prepared GPU check (docs/benchmarks.md, "GPU check"), one command of at most 8 minutes on one NVIDIA
# H100 / H200 host that already holds JAX with CUDA, flax, optax, orbax, transformers and torch:
#   bash tools/device_check.sh [--dry-run] [--steps parity,decode,update,attention] [--out DIR]
# Results: one JSON file per step and summary.md under --out, else $OUT (the device tool returns what is
# written there), else runs/device_check. The repository runs in place (PYTHONPATH, no pip install); wheels
# carried in .whl/ (other packages, where a host lacks them) are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec "${PYTHON:-python3}" tools/device_check.py "$@"
