"""What every benchmark tool in tools/ shares: JAX's compile time inside a timed region, the machine's load,
and writing the result table (stdout, and appended to --out)."""

from __future__ import annotations

import os


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


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as a table header states them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def write_table(table: str, out: str | None) -> None:
    """Prints the markdown table, and appends it to `out` when given (docs/benchmarks.md)."""
    print(table)
    if out:
        with open(out, "a") as f:
            f.write(table)
