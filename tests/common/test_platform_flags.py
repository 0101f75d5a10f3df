"""common.platform_flags: GPU flags and memory fraction set only on a GPU and never over the user's, the
platform judged without starting JAX, bfloat16 compute on accelerators by default; the cuda extras pin the JAX
this repository runs."""

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from common import platform_flags as pf

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value, expected", [("cuda", "gpu"), ("cuda,cpu", "gpu"), ("tpu", "tpu"), ("cpu", "cpu"),
                                             ("rocm", "gpu")])
def test_jax_platforms_decides(value, expected):
    assert pf.platform({"JAX_PLATFORMS": value}) == expected


def test_flags_and_fraction_only_on_a_gpu():
    env = {"JAX_PLATFORMS": "cpu"}
    assert pf.apply_platform_defaults(env) == {} and env == {"JAX_PLATFORMS": "cpu"}
    env = {"JAX_PLATFORMS": "tpu"}
    assert pf.apply_platform_defaults(env) == {}
    env = {"JAX_PLATFORMS": "cuda"}
    changed = pf.apply_platform_defaults(env)
    assert env[pf.MEM_FRACTION_ENV] == str(pf.GPU_MEM_FRACTION) == changed[pf.MEM_FRACTION_ENV]
    for flag, value, why in pf.GPU_XLA_FLAGS:
        assert f"--{flag}={value}" in env["XLA_FLAGS"].split() and why
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in env["XLA_FLAGS"]


def test_what_the_user_set_stays():
    env = {"JAX_PLATFORMS": "cuda", pf.MEM_FRACTION_ENV: "0.5",
           "XLA_FLAGS": "--xla_gpu_enable_triton_gemm=true --xla_force_host_platform_device_count=2"}
    pf.apply_platform_defaults(env)
    flags = env["XLA_FLAGS"].split()
    assert env[pf.MEM_FRACTION_ENV] == "0.5"
    assert "--xla_gpu_enable_triton_gemm=true" in flags and "--xla_gpu_enable_triton_gemm=false" not in flags
    assert flags[:2] == ["--xla_gpu_enable_triton_gemm=true", "--xla_force_host_platform_device_count=2"]
    again = dict(env)
    assert pf.apply_platform_defaults(again) == {} and again == env  # idempotent


def test_no_gpu_visible_means_no_gpu():
    assert pf.platform({"CUDA_VISIBLE_DEVICES": ""}) in ("cpu", "tpu")
    assert pf.platform({"CUDA_VISIBLE_DEVICES": "-1"}) in ("cpu", "tpu")


@pytest.mark.parametrize("platform, dtype", [("gpu", "bfloat16"), ("tpu", "bfloat16"), ("cpu", "float32")])
def test_compute_dtype_by_platform(platform, dtype):
    env = {"JAX_PLATFORMS": {"gpu": "cuda", "tpu": "tpu", "cpu": "cpu"}[platform]}
    assert pf.default_compute_dtype(env) == dtype


def test_grpo_config_takes_the_platform_dtype(monkeypatch):
    from rl_scaling.grpo.defaults import default_config, paper_recipe

    assert default_config().model.dtype == pf.default_compute_dtype()
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # judged from the environment while JAX has not started
    monkeypatch.setattr(pf, "_started_backend", lambda: None)
    assert default_config().model.dtype == "bfloat16" and default_config().model.param_dtype == "float32"
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert default_config().model.dtype == "float32"
    assert paper_recipe("qwen2_5_0_5b").model.dtype == "bfloat16"  # the recipe says so itself


def test_platform_does_not_start_jax():
    code = ("import sys; from common.platform_flags import platform, apply_platform_defaults; "
            "platform(); apply_platform_defaults(); "
            "from jax._src import xla_bridge as xb; print(xb.backends_are_initialized() if 'jax' in sys.modules "
            "else False)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_cuda_extras_pin_the_installed_jax():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    version = metadata.version("jax")
    assert extras["cuda"] == [f"jax[cuda12]=={version}"]
    assert extras["cuda13"] == [f"jax[cuda13]=={version}"]
