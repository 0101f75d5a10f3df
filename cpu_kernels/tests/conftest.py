"""Fixtures of the kernels' tests (run on their own: `python -m pytest cpu_kernels/tests`)."""

import os

import pytest

# Every test compiles what it tests: no persistent compilation cache (as tests/conftest.py).
os.environ["QRR_COMPILATION_CACHE"] = "off"


@pytest.fixture(scope="session")
def smollm2_dir():
    """Path of the converted SmolLM2-135M-Instruct HF directory (built offline on first use)."""
    from common.checkpoint.gguf import ensure_smollm2

    return ensure_smollm2()
