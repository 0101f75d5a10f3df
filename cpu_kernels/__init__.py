"""CPU decode kernels for the decoder's sampler: an optional attention backend ("cpu") for x86-64 CPUs with
AVX-512 BF16, plugged into `common.attention` through the entry point `qwen_rl_research.attention` (this
directory's pyproject.toml); `common/` never imports it.

    bash tools/setup.sh                 # installs it on a CPU that can run it
    pip install -e ./cpu_kernels        # by hand
    load_pretrained(..., attention="cpu")   # or "auto": picked on one CPU device where it builds

Modules: `backend` (the seam's protocol), `forward` (the decoder's cached pass on packed weights, from
`common.model`'s pure functions), `products` / `attention` / `layer` / `embedding` (one FFI kernel family each,
sources in src/), `build` (compiling and registering src/ with XLA). Tests: cpu_kernels/tests.
"""
