"""Multi-process start-up (common.distributed): how the environment is read, which rows each host feeds, a
real 2-process x 4-device gloo run, and the launch tool whose commands start such runs on a pod."""

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from common.distributed import (global_batch, host_local_rows, host_shard, initialize, is_main_process,
                                resolve_cluster, to_host)
from common.sharding import make_mesh, named_sharding
from tests.multiprocess import REPO_ROOT, run_processes

WORKER = Path(__file__).with_name("distributed_worker.py")


# ---- resolve_cluster: a pure function of arguments and environment ---------------------------------------

def test_nothing_set_is_one_process():
    assert resolve_cluster(env={}).mode == "single"
    assert resolve_cluster(env={"QRR_NUM_PROCESSES": "1"}).mode == "single"


def test_explicit_from_our_variables_and_from_jax_names():
    spec = resolve_cluster(env={"QRR_COORDINATOR": "10.0.0.1:1234", "QRR_NUM_PROCESSES": "4",
                                "QRR_PROCESS_ID": "3", "QRR_LOCAL_DEVICE_IDS": "0,1"})
    assert (spec.mode, spec.coordinator, spec.num_processes, spec.process_id, spec.local_device_ids) == (
        "explicit", "10.0.0.1:1234", 4, 3, (0, 1))
    spec = resolve_cluster(env={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"})
    assert (spec.mode, spec.coordinator, spec.num_processes, spec.process_id) == ("explicit", "h:1", 2, 0)


def test_arguments_win_over_environment():
    env = {"QRR_COORDINATOR": "a:1", "QRR_NUM_PROCESSES": "4", "QRR_PROCESS_ID": "3"}
    spec = resolve_cluster("b:2", 2, 1, env=env)
    assert (spec.coordinator, spec.num_processes, spec.process_id) == ("b:2", 2, 1)


def test_cluster_launchers_mean_auto_detection():
    assert resolve_cluster(env={"QRR_DISTRIBUTED": "auto"}).mode == "auto"
    assert resolve_cluster(env={"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}).mode == "auto"
    assert resolve_cluster(env={"TPU_WORKER_HOSTNAMES": "localhost"}).mode == "single"
    assert resolve_cluster(env={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}).mode == "auto"
    off = {"QRR_DISTRIBUTED": "off", "QRR_COORDINATOR": "a:1", "QRR_NUM_PROCESSES": "2", "QRR_PROCESS_ID": "0"}
    assert resolve_cluster(env=off).mode == "single"


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match=r"missing: process_id .*QRR_PROCESS_ID"):
        resolve_cluster(env={"QRR_COORDINATOR": "a:1", "QRR_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match=r"integer.*\$QRR_NUM_PROCESSES"):
        resolve_cluster(env={"QRR_NUM_PROCESSES": "two"})
    with pytest.raises(ValueError, match=r"process_id 2 is outside \[0, 2\)"):
        resolve_cluster("a:1", 2, 2, env={})
    with pytest.raises(ValueError, match="host:port"):
        resolve_cluster("localhost", 2, 0, env={})
    with pytest.raises(ValueError, match="QRR_DISTRIBUTED"):
        resolve_cluster(env={"QRR_DISTRIBUTED": "yes"})
    with pytest.raises(ValueError, match="cpu_collectives"):
        initialize(cpu_collectives="nccl")


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
    for name in ("QRR_COORDINATOR", "QRR_NUM_PROCESSES", "QRR_PROCESS_ID", "QRR_DISTRIBUTED",
                 "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert initialize().mode == "single"
    assert jax.process_count() == 1 and is_main_process()


# ---- which rows a host feeds -------------------------------------------------------------------------------

def test_host_shard_is_a_contiguous_block():
    items = list(range(12))
    assert host_shard(items, 0, 3) == [0, 1, 2, 3]
    assert host_shard(items, 2, 3) == [8, 9, 10, 11]
    assert host_shard(items) == items  # one process here
    with pytest.raises(ValueError, match="12 items does not split over 5 hosts"):
        host_shard(items, 0, 5)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        host_shard(items, 3, 3)


def test_single_process_owns_every_row_and_global_batch_round_trips():
    mesh = make_mesh({"fsdp": 4, "tensor": 2}, jax.devices()[:8])
    x = np.arange(2 * 8 * 3, dtype=np.int32).reshape(2, 8, 3)
    sharding = named_sharding(mesh, (None, "batch", None), x.shape)
    rows = host_local_rows(sharding, x.shape)
    assert [r.tolist() for r in rows] == [[0, 1], list(range(8)), [0, 1, 2]]
    g = global_batch(x, sharding)
    assert g.sharding == sharding and np.array_equal(to_host(g), x)


# ---- two real processes --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_process_report():
    outputs = run_processes(WORKER, [], num_processes=2, devices_per_process=4, timeout=180)
    return [json.loads(re.search(r"^REPORT (.*)$", out, re.M).group(1)) for out in outputs]


def test_two_processes_see_eight_devices_and_one_main(two_process_report):
    assert [r["process"] for r in two_process_report] == [0, 1]
    assert all(r["count"] == 2 and r["devices"] == 8 and r["local_devices"] == 4 for r in two_process_report)
    assert [r["main"] for r in two_process_report] == [True, False]


def test_each_host_feeds_its_own_rows(two_process_report):
    # Batch of 8 rows over fsdp=8: process 0's devices hold rows 0-3, process 1's rows 4-7, as host_shard says.
    assert [r["rows"] for r in two_process_report] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [r["host_shard"] for r in two_process_report] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # x[i, j] = 10 i + j over 8 x 3: sum = 10 * 28 * 3 + 8 * 3 = 864; weighted by row index: sum_i i * (30 i + 3).
    weighted = sum(i * (30 * i + 3) for i in range(8))
    for r in two_process_report:
        assert r["sum"] == 864 and r["weighted"] == weighted
        assert r["gathered"] == [[10 * i + j for j in range(3)] for i in range(8)]


# ---- the launch tool starts such runs -------------------------------------------------------------------

LAUNCH_ARGS = ["--config=configs/grpo/base.py", "--preset=v5p-64", "--size=qwen2_5_7b", "--name=grpo-7b",
               "--project=my-project", "--bucket=my-grpo-bucket", "--set", "data.source=gsm8k",
               "--set", "data.curriculum=False", "--dry-run"]


@pytest.fixture(scope="module")
def launch_dry_run():
    out = subprocess.run([sys.executable, "tools/launch.py", *LAUNCH_ARGS], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_launch_dry_run_starts_every_worker_with_the_preset_mesh(launch_dry_run):
    from common.mesh_presets import get_mesh_preset

    lines = launch_dry_run.splitlines()
    create = next(line for line in lines if "queued-resources create" in line)
    assert "--accelerator-type=v5p-64" in create and "--runtime-version=v2-alpha-tpuv5" in create
    start = next(line for line in lines if "tools/train_grpo.py" in line and "--worker=all" in line)
    data, fsdp, tensor = get_mesh_preset("v5p-64").degrees("qwen2_5_7b")
    for flag in (f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}", f"--config.mesh.tensor={tensor}",
                 "--workdir=/mnt/qrr-bucket/runs/grpo-7b", "--config.data.source=gsm8k", "QRR_DISTRIBUTED=auto"):
        assert flag in start, flag
    assert (data, fsdp, tensor) == (1, 32, 1)
    # The variable the workers get is the one initialize() reads as "let JAX find the pod".
    assert resolve_cluster(env={"QRR_DISTRIBUTED": "auto"}).mode == "auto"
    assert "jax[tpu]==" + jax.__version__ in launch_dry_run
    assert "tensorboard --logdir=gs://my-grpo-bucket/runs/grpo-7b" in lines


def test_launch_needs_a_project_and_bucket_for_tpu():
    out = subprocess.run([sys.executable, "tools/launch.py", "--preset=v5e-16", "--size=qwen2_5_0_5b", "--dry-run"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                         env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0 and "--project is required" in out.stderr


def test_pod_guide_commands_match_the_dry_run(launch_dry_run):
    guide = (REPO_ROOT / "docs" / "pod_guide.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", guide, re.S)
    guide_commands = [line for block in blocks for line in block.splitlines()
                      if line.strip() and not line.startswith("#")]
    tool_commands = [line for line in launch_dry_run.splitlines() if line.strip() and not line.startswith("#")]
    missing = [c for c in tool_commands if c not in guide_commands]
    assert not missing, "docs/pod_guide.md lacks (or has a different form of) these dry-run commands:\n" + \
        "\n".join(missing)
