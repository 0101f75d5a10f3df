"""The prepared GPU check: parity, decode speed, the GRPO update and attention backends on one NVIDIA GPU.

    bash tools/device_check.sh                      # on a GPU host; results under $OUT (else runs/device_check)
    python tools/device_check.py --dry-run --out /tmp/check   # every step at tiny shapes on the CPU

Each step (tools/device_check_steps.py) runs in its own process under its own time limit (`LIMITS`; the whole
check stays under 8 minutes) and writes one results file, <out>/<step>.json, also when it fails or runs out
of time; <out>/summary.md holds the table for docs/benchmarks.md ("GPU check"). The GPU flags and the memory
fraction of the entry points apply (common/platform_flags.py). Needs JAX, flax, optax, orbax, transformers
and torch; the rest of the project's dependencies are not imported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Seconds per step on a GPU: 450 s in all, under the check's 8 minutes with the processes' start-up.
LIMITS = {"parity": 75, "decode": 175, "update": 140, "attention": 60}
DRY_LIMIT = 120  # per step on a CPU, tiny shapes


def run_step(name: str, dry_run: bool, path: Path) -> dict:
    """This process runs step `name` and returns its results (with the device and the seconds it took); what
    the step reports on the way is saved at `path` with status "partial"."""
    from common.platform_flags import apply_platform_defaults

    applied = apply_platform_defaults()  # before JAX starts
    import device_check_steps as steps  # beside this script

    head = {"step": name, "device": steps.device_info(), "dry_run": dry_run, "env_set": applied,
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    t = time.perf_counter()
    report = lambda partial: path.write_text(json.dumps({**head, "status": "partial", **partial}, indent=2))  # noqa: E731
    result = steps.STEPS[name](steps.DRY if dry_run else steps.GPU, report)
    return {**head, "status": "ok", "seconds": time.perf_counter() - t, **result}


def spawn_step(name: str, out: Path, dry_run: bool, limit: float) -> dict:
    """Runs `name` in a child process under `limit` seconds; its results, or what went wrong beside what it had
    reported by then."""
    path = out / f"{name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--out", str(out)]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd + (["--dry-run"] if dry_run else []), capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired as e:
        tail = e.stderr or b""
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {**partial(path), "step": name, "status": "timeout", "limit_s": limit, "stderr_tail": tail[-3000:]}
    if done.returncode == 0 and path.exists():
        return json.loads(path.read_text())
    return {**partial(path), "step": name, "status": "failed", "returncode": done.returncode,
            "seconds": time.perf_counter() - t, "stderr_tail": done.stderr[-3000:]}


def partial(path: Path) -> dict:
    """What a step had reported when it stopped (empty if nothing)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def step_lines(name: str, r: dict) -> list[str]:
    """The rows of a step's results, as far as it got."""
    if name == "parity":
        return [f"  - {m}: logits max |diff| {fmt(v['logits_max_abs_diff'])} (rel {fmt(v['logits_rel_err'])}), "
                f"greedy {v['greedy_tokens_equal']}/{v['greedy_tokens']} equal, bf16 rel {fmt(v['bf16_logits_rel_err'])}"
                for m, v in r.get("models", {}).items()]
    if name == "decode":
        lines = [f"  - batch {row['batch']}: ours {fmt(row['ours_tokens_per_s'], '.1f')} tok/s, transformers "
                 f"{fmt(row['transformers_tokens_per_s'], '.1f')} tok/s ({fmt(row['ratio'], '.2f')}x)"
                 for row in r.get("rows", [])]
        lines += [f"  - rollout engine at batch {row['batch']}, {row['decode_steps']} decode steps a round trip: "
                  f"{fmt(row['tokens_per_s'], '.1f')} tok/s, {row['round_trips']} round trips, tokens equal "
                  f"{row['tokens_equal']}"
                  for row in r.get("engine_rows", [])]
        if "batch1_weight_bytes_per_s" in r:
            share = r["batch1_hbm_share"]
            lines.append(f"  - batch 1 reads weights at {r['batch1_weight_bytes_per_s'] / 1e9:.0f} GB/s: "
                         f"{fmt(share and 100 * share, '.0f')}% of HBM bandwidth")
        return lines
    if name == "update" and "update_s" in r:
        peak, mfu = r["peak_bytes_in_use"], r["mfu"]
        return [f"  - {r['micro_batches']} micro-batches of {r['micro_batch']} x {r['prompt_len']}+{r['response_len']} "
                f"tokens: {r['update_s']:.2f} s, MFU {fmt(mfu and 100 * mfu, '.1f')}%, peak memory "
                f"{fmt(peak and peak / 2**30, '.1f')} GiB"]
    if name == "attention":
        return [f"  - {b}: max |diff| {fmt(v['max_abs_diff_vs_f32'])}, forward {v['forward_ms']:.2f} ms, "
                f"forward+backward {v['forward_backward_ms']:.2f} ms" for b, v in r.get("backends", {}).items()]
    return []


def summary_lines(results: dict[str, dict]) -> list[str]:
    """The markdown a person pastes into docs/benchmarks.md: one line per step, then the step's rows."""
    lines = []
    for name, r in results.items():
        device = r.get("device", {})
        lines.append(f"- **{name}**: {r['status']}" + (f", {r['seconds']:.0f} s" if "seconds" in r else "")
                     + (f" on {device.get('device_kind')} (jax {device.get('jax')})" if device else ""))
        lines += step_lines(name, r)
    return lines


def run_all(out: Path, steps: list[str], dry_run: bool) -> dict[str, dict]:
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in steps:
        results[name] = spawn_step(name, out, dry_run, DRY_LIMIT if dry_run else LIMITS[name])
        (out / f"{name}.json").write_text(json.dumps(results[name], indent=2))
        print(f"{name}: {results[name]['status']}", flush=True)
    (out / "summary.md").write_text("\n".join(summary_lines(results)) + "\n")
    print("\n".join(summary_lines(results)))
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/device_check", help="results directory")
    p.add_argument("--steps", default=",".join(LIMITS), help=f"comma-separated, of {', '.join(LIMITS)}")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (JAX_PLATFORMS=cpu)")
    p.add_argument("--step", choices=list(LIMITS), help=argparse.SUPPRESS)  # one step, in this process
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"
    out = Path(args.out)
    if args.step:
        path = out / f"{args.step}.json"
        path.write_text(json.dumps(run_step(args.step, args.dry_run, path), indent=2))
        return 0
    unknown = set(args.steps.split(",")) - set(LIMITS)
    if unknown:
        raise SystemExit(f"unknown step(s) {sorted(unknown)}; known: {list(LIMITS)}")
    results = run_all(out, args.steps.split(","), args.dry_run)
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
