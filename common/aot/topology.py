"""Devices to compile for: a TPU slice shape through libtpu (no TPU needed), or the local devices.

libtpu reads two variables when it loads, so callers that compile for TPU on a CPU host should run
`prepare_libtpu_env()` before importing JAX: `TPU_WORKER_HOSTNAMES=localhost` (no worker list to look up)
and `ALLOW_MULTIPLE_LIBTPU_LOAD=1` (with libtpu installed, every JAX process on the machine takes libtpu's
lock file; without this variable a second process cannot describe a topology).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

LIBTPU_ENV = {"TPU_WORKER_HOSTNAMES": "localhost", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
# `bash tools/setup.sh --tpu-aot` installs libtpu here, beside the environment rather than in it: with libtpu in
# the environment every JAX start-up on a CPU machine tries (and fails, noisily) to open a TPU.
SIDE_SITE = Path(__file__).resolve().parents[2] / "artifacts" / "libtpu"
INSTALL_HINT = ('bash tools/setup.sh --tpu-aot (libtpu into artifacts/libtpu), or pip install '
                '"jax[tpu]==<installed jax version>"')


class TopologyUnavailableError(RuntimeError):
    """libtpu is missing or cannot describe the requested slice."""


def prepare_libtpu_env(env=None) -> None:
    """Sets libtpu's start-up variables (unless already set) and makes the side-installed libtpu importable
    (`SIDE_SITE`) when the environment has none; call before importing JAX."""
    env = os.environ if env is None else env
    for key, value in LIBTPU_ENV.items():
        env.setdefault(key, value)
    if importlib.util.find_spec("libtpu") is None and (SIDE_SITE / "libtpu").is_dir():
        sys.path.append(str(SIDE_SITE))


def libtpu_importable() -> bool:
    """libtpu in the environment or in `SIDE_SITE`."""
    return importlib.util.find_spec("libtpu") is not None or (SIDE_SITE / "libtpu").is_dir()


def libtpu_version() -> str | None:
    """The installed libtpu version, or None when it is not installed."""
    from importlib import metadata

    for dist in ("libtpu", "libtpu-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    side = sorted(SIDE_SITE.glob("libtpu-*.dist-info"))
    return side[-1].name.removeprefix("libtpu-").removesuffix(".dist-info") if side else None


def tpu_devices(topology: str, chip_config: str | None = None) -> list:
    """Compile-only devices of a TPU slice, e.g. tpu_devices("v5p:2x4x4", "megacore") -> 32 devices.

    topology: "<version>:<chip grid>" as libtpu names it ("v5e:2x2", "v4:2x2x1", "v6e:16x16").
    chip_config: "megacore" for v4 / v5p (one JAX device per chip, as on the real slice).
    """
    if libtpu_version() is None:
        raise TopologyUnavailableError(f"libtpu is not installed, so TPU topology {topology!r} cannot be "
                                       f"described; install it with {INSTALL_HINT}")
    prepare_libtpu_env()
    from jax.experimental import topologies

    kwargs = {"chip_config_name": chip_config} if chip_config else {}
    try:
        return list(topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs).devices)
    except Exception as err:  # libtpu raises JaxRuntimeError with its own text
        raise TopologyUnavailableError(f"libtpu could not describe TPU topology {topology!r} "
                                       f"(chip_config={chip_config!r}): {err}") from err


def preset_devices(preset) -> list:
    """Devices for a `common.mesh_presets.MeshPreset`: the TPU topology for TPU presets; for others, this
    host's devices when they are of the preset's platform and count (compiling on the machine itself)."""
    if preset.platform == "tpu":
        return tpu_devices(preset.topology, preset.chip_config)
    import jax

    devices = jax.devices()
    platform = devices[0].platform
    if platform != preset.platform or len(devices) != preset.num_devices:
        raise TopologyUnavailableError(
            f"preset {preset.name} needs {preset.num_devices} {preset.platform} device(s) to compile for; this "
            f"host has {len(devices)} {platform} device(s) (GPU programs compile only on a GPU host)")
    return devices
