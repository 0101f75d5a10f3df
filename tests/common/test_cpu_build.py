"""Building our CPU kernels (common/kernels/cpu_build): the clear errors, and the fallback to XLA's ops with
a warning when they cannot be built."""

import jax.numpy as jnp
import pytest

from common.kernels import cpu_attention, cpu_build, cpu_products


def test_unsupported_cpu_or_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("QRR_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.raises(RuntimeError, match=r"building cpu_products.cc, .* failed"):
        cpu_build.build()
    monkeypatch.setattr(cpu_build, "supported_cpu", lambda: False)
    with pytest.raises(RuntimeError, match="need an x86-64 CPU with AVX-512 BF16"):
        cpu_build.build()
    cpu_build.available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="CPU decode kernels unavailable"):
            assert not cpu_build.available()
        assert not cpu_products.routed(1, jnp.bfloat16)
        assert not cpu_attention.routed()
    finally:
        cpu_build.available.cache_clear()
    monkeypatch.undo()
    assert cpu_build.available()
