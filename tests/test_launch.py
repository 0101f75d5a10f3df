"""tools/launch.py beyond the start of the run (tests/common/test_distributed.py checks that): the model is
converted once into the bucket and read from there, the slice is a queued resource (Spot when asked), a
preempted slice comes back with --recreate, and a GPU host installs the cuda extra."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TPU = ["--preset=v5p-64", "--size=qwen2_5_72b", "--name=big", "--project=p", "--bucket=b", "--dry-run"]


def dry_run(*args) -> list[str]:
    out = subprocess.run([sys.executable, "tools/launch.py", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_the_model_is_converted_once_into_the_bucket_and_read_from_there():
    lines = dry_run(*TPU)
    convert = [line for line in lines if "convert_hf_to_orbax.py" in line]
    assert len(convert) == 1 and "--worker=0" in convert[0] and "--worker=all" not in convert[0]
    assert "--local-dir /mnt/qrr-bucket/hf/Qwen2.5-72B-Instruct" in convert[0]  # not a worker's disk
    assert "--out /mnt/qrr-bucket/models/Qwen2.5-72B-Instruct" in convert[0]
    assert "test -f /mnt/qrr-bucket/models/Qwen2.5-72B-Instruct/metadata.json ||" in convert[0]  # once
    start = next(line for line in lines if "tools/train_grpo.py" in line)
    assert "--config.model.path=/mnt/qrr-bucket/models/Qwen2.5-72B-Instruct" in start
    assert not any("hf download" in line and "--worker=all" in line for line in lines)
    titles = [line for line in lines if line.startswith("# ")]
    assert titles.index(next(t for t in titles if "Mount" in t)) < titles.index(next(t for t in titles if "Convert" in t))


def test_the_slice_is_a_queued_resource_spot_when_asked():
    lines = dry_run(*TPU, "--spot")
    create = next(line for line in lines if "queued-resources create" in line)
    assert create.endswith(" --spot") and "--node-id=big" in create
    assert any(line.startswith("until [") and "= ACTIVE ]" in line for line in lines)
    assert not any("--spot" in line for line in dry_run(*TPU) if "queued-resources create" in line)
    assert lines[-1].startswith("gcloud compute tpus queued-resources delete big")


def test_recreate_brings_a_preempted_slice_back_and_resumes():
    lines = dry_run(*TPU, "--recreate")
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands[0].startswith("gcloud compute tpus queued-resources delete big")
    assert any("queued-resources create big" in c for c in commands)
    assert any("tools/train_grpo.py" in c for c in commands)  # the same start command: it resumes
    full = dry_run(*TPU)
    start = next(c for c in commands if "tools/train_grpo.py" in c)
    assert start in full
    for absent in ("buckets create", "convert_hf_to_orbax.py", "memory_plan.py"):
        assert not any(absent in c for c in commands), absent


def test_a_gpu_host_installs_the_cuda_extra():
    lines = dry_run("--preset=8xh100", "--size=qwen2_5_7b", "--dry-run")
    assert '.venv/bin/pip install -e ".[cuda]"' in lines
    assert not any("XLA_PYTHON_CLIENT_MEM_FRACTION" in line for line in lines)  # the entry points set it
