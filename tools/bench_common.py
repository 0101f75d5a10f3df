"""What every benchmark tool in tools/ shares: JAX's compile time inside a timed region, the machine's load,
and writing the result table (stdout, and appended to --out)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling (jax.monitoring events) since `reset`."""

    PREFIX = "/jax/core/compile/"

    def __init__(self):
        import jax

        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **kwargs) -> None:
        if event.startswith(self.PREFIX):
            self.seconds += duration

    def reset(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def machine(cpuinfo: str | None = None) -> str:
    """The host as a table header names it: the CPU's model, the vector and matrix units the CPU decode kernels
    pick between (AVX-512 BF16 tiles, AMX tiles), the cores this process may use. The same code runs at very different
    speeds on the hosts these benchmarks have met (docs/benchmarks.md), so every table says which it was.
    cpuinfo: the text of /proc/cpuinfo (read here when None)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    info = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    amx = {"amx_tile", "amx_bf16"} <= flags  # tiles with bfloat16 products (what cpu_kernels/src/amx.h needs)
    units = [name for flag, name in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16")) if flag in flags]
    model = info.get("model name", platform.processor() or "unknown CPU")
    if "cpu family" in info:
        model += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return (f"{model}, {platform.machine()}, {', '.join(units) or 'no AVX-512'}, {'AMX' if amx else 'no AMX'}, "
            f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as a table header states them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def write_table(table: str, out: str | None) -> None:
    """Prints the markdown table, and appends it to `out` when given (a results file of your own: the tables of
    docs/benchmarks.md are replaced by hand, see its "How to rerun")."""
    print(table)
    if out:
        with open(out, "a") as f:
            f.write(table)
