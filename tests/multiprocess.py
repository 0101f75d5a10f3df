"""Run a script as several JAX processes on this machine (each with its own fake CPU devices), the way a
multi-host job runs on a pod: same command everywhere, process id and coordinator from QRR_* variables,
collectives over gloo (common.distributed.initialize)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(num_processes: int, process_id: int, devices: int, port: int | None) -> dict[str, str]:
    """The environment of one process: its fake device count, and (for >1 processes) the QRR_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QRR_", "JAX_COORDINATOR", "JAX_NUM_PROC",
                                                                      "JAX_PROCESS_ID"))}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if num_processes > 1:
        env.update(QRR_COORDINATOR=f"127.0.0.1:{port}", QRR_NUM_PROCESSES=str(num_processes),
                   QRR_PROCESS_ID=str(process_id))
    return env


def run_processes(script: str | Path, args: list[str], *, num_processes: int, devices_per_process: int,
                  timeout: float = 240) -> list[str]:
    """Starts `num_processes` copies of `python script *args`, waits for all, returns their outputs
    (stdout + stderr) in process order; raises with every output when one fails or hangs."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(script), *args], cwd=REPO_ROOT,
                              env=process_env(num_processes, i, devices_per_process, port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(num_processes)]
    outputs, failed = [], False
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            out, _ = proc.communicate()
            failed = True
        outputs.append(out)
        failed |= proc.returncode != 0
    if failed:
        report = "\n".join(f"--- process {i} (rc={p.returncode}) ---\n{o[-4000:]}"
                           for i, (p, o) in enumerate(zip(procs, outputs)))
        raise RuntimeError(f"{script} failed in a {num_processes}-process run:\n{report}")
    return outputs
