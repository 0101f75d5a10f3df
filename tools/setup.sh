#!/usr/bin/env bash
# Sets up a fresh machine: a virtualenv in .venv with the project (editable) and its test extra.
# bash tools/setup.sh [--tpu-aot]
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 (CPU) is pinned in the test extra: transformers is the reference the decoder is checked
# against, and it converts the offline SmolLM2 GGUF.
.venv/bin/python -m pip install -q -e '.[test]'
# --tpu-aot: libtpu (the TPU compiler, for ahead-of-time memory plans on this CPU host) beside the environment,
# in artifacts/libtpu, not inside it: inside, every JAX start-up would try to open a TPU. common.aot finds it.
if [[ " $* " == *" --tpu-aot "* ]] && [ ! -d artifacts/libtpu/libtpu ]; then
  LIBTPU=$(.venv/bin/python -c 'from importlib import metadata; print(next(r.split(";")[0] for r in metadata.requires("jax") if r.startswith("libtpu")).replace(" ", ""))')
  .venv/bin/python -m pip install -q --no-deps --target artifacts/libtpu "$LIBTPU"
fi
# The CPU decode kernels (common/kernels/*.cc), built now rather than on first use; without a
# compiler the decoder uses XLA's products.
.venv/bin/python -m common.kernels.cpu_build || echo "CPU decode kernels not built: XLA's ops will be used"
echo "set up: $(.venv/bin/python -c 'import jax, flax, transformers; print("jax", jax.__version__, "flax", flax.__version__, "transformers", transformers.__version__)')"
