#!/usr/bin/env bash
# Sets up a fresh machine: a virtualenv in .venv with the project (editable) and its test extra, and on an
# x86-64 CPU with AVX-512 BF16 the CPU decode kernels (cpu_kernels/, the "cpu" attention backend).
# bash tools/setup.sh [--gpu [--gpu-torch]] [--tpu-aot] [--no-cpu-kernels]
# --gpu (an NVIDIA GPU host): JAX for CUDA as well (pyproject's cuda extra, or cuda13 where the driver is 580 or
# newer), checked to see the GPUs. --gpu-torch also puts a CUDA build of the pinned torch in place (from
# $TORCH_INDEX_URL), only for tools/device_check.py's comparison with transformers on the GPU: the reference
# checks of the tests run on the CPU torch of the test extra.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 (CPU) is pinned in the test extra: transformers is the reference the decoder is checked
# against, and it converts the offline SmolLM2 GGUF.
.venv/bin/python -m pip install -q -e '.[test]'
if [[ " $* " == *" --gpu "* ]]; then
  DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 | cut -d. -f1)
  [ -n "$DRIVER" ] || { echo "--gpu: nvidia-smi finds no NVIDIA driver on this machine" >&2; exit 1; }
  CUDA_EXTRA=cuda; [ "$DRIVER" -ge 580 ] && CUDA_EXTRA=cuda13
  .venv/bin/python -m pip install -q -e ".[$CUDA_EXTRA]"
  .venv/bin/python -c 'import jax; d = jax.devices(); assert d[0].platform == "gpu", f"JAX sees no GPU: {d}"; print(f"JAX sees {len(d)} GPU(s): {d[0].device_kind}")'
  if [[ " $* " == *" --gpu-torch "* ]] && ! .venv/bin/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    TORCH=$(grep -o 'torch==[0-9.]*' pyproject.toml | head -1)
    .venv/bin/python -m pip install -q "$TORCH" --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
  fi
fi
# --tpu-aot: libtpu (the TPU compiler, for ahead-of-time memory plans on this CPU host) beside the environment,
# in artifacts/libtpu, not inside it: inside, every JAX start-up would try to open a TPU. common.aot finds it.
if [[ " $* " == *" --tpu-aot "* ]] && [ ! -d artifacts/libtpu/libtpu ]; then
  LIBTPU=$(.venv/bin/python -c 'from importlib import metadata; print(next(r.split(";")[0] for r in metadata.requires("jax") if r.startswith("libtpu")).replace(" ", ""))')
  .venv/bin/python -m pip install -q --no-deps --target artifacts/libtpu "$LIBTPU"
fi
# The CPU decode kernels: an optional package (cpu_kernels/) that registers the "cpu" attention backend, for
# CPUs that run them; built now rather than on first use. Without them "auto" picks the "xla" reference.
if [[ " $* " == *" --no-cpu-kernels "* ]]; then
  echo "CPU decode kernels not installed (--no-cpu-kernels): the xla attention backend will be used"
elif [ "$(uname -m)" = x86_64 ] && grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null; then
  .venv/bin/python -m pip install -q -e ./cpu_kernels
  .venv/bin/python -m cpu_kernels.build || echo "CPU decode kernels not built: the xla attention backend will be used"
else
  echo "this CPU has no AVX-512 BF16: the CPU decode kernels are not installed, the xla attention backend will be used"
fi
echo "set up: $(.venv/bin/python -c 'import jax, flax, transformers; print("jax", jax.__version__, "flax", flax.__version__, "transformers", transformers.__version__)')"
