"""Building the CPU kernels (cpu_kernels/build): the clear errors, and what the backend seam does when they
cannot be built: "auto" falls back to the reference with a warning, "cpu" by name fails."""

import pytest

from common.attention import XlaAttention, select_backend
from cpu_kernels import build
from cpu_kernels.backend import CpuKernels


def test_unsupported_cpu_or_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("QRR_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.raises(RuntimeError, match=r"building products.cc, .* failed"):
        build.build()
    monkeypatch.setattr(build, "supported_cpu", lambda: False)
    with pytest.raises(RuntimeError, match="need an x86-64 CPU with AVX-512 BF16"):
        build.build()
    build.available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="CPU decode kernels unavailable"):
            assert not build.available()
        assert not CpuKernels.suits("cpu", None)
        assert isinstance(select_backend("auto", platform="cpu"), XlaAttention)
        with pytest.raises(RuntimeError, match="could not be built"):
            select_backend("cpu")
    finally:
        build.available.cache_clear()
    monkeypatch.undo()
    assert build.available()
