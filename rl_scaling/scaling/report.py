"""fit.json: the written record of one fit, and reading it back.

Keys (sizes N are written as decimal strings, e.g. "1500000000"):
  law, x, variant, objective, optimiser, protocol, k_max, n0, log10_n0,
  e0 {N: E(N)}, k {N: k(N)}, r2 {"L", "log_L"}, bounds, sizes, points,
  free_k {k, e0, r2} (k and E per size on the fitted points; inter adds the held-out size),
  alternative (appendix form on the fitted points, optional),
  prediction {rmse, mape, per_size, ...} for inter/intra, bootstrap (optional).
"""

from __future__ import annotations

import json
import math
import pathlib

from rl_scaling.scaling import fit as fit_lib

LAW = "ln L = -k(N) ln X + E(N),  k(N) = K_max / (1 + N_0 / N)  (natural logs)"
REQUIRED_KEYS = ("k_max", "n0", "e0", "x", "objective", "protocol")


def size_key(n: float) -> str:
    """JSON key of a size: the integer when N is whole, else repr."""
    n = float(n)
    return str(int(n)) if n.is_integer() else repr(n)


def _keyed(values: dict) -> dict:
    return {size_key(n): v for n, v in sorted(values.items())}


def _json_safe(value):
    """Float dict keys -> size strings; NaN/inf -> None (strict JSON)."""
    if isinstance(value, dict):
        return {size_key(k) if isinstance(k, float) else k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fit_report(result, x_name: str, variant: str, bounds: fit_lib.FitBounds,
               free_k: fit_lib.FreeKFit | None = None, alternative=None,
               bootstrap: dict | None = None) -> dict:
    """The fit.json dict of a protocols.ProtocolResult."""
    fitted = result.fit
    report = {
        "law": LAW, "x": x_name, "variant": variant, "objective": fitted.objective,
        "optimiser": fit_lib.OPTIMISER, "protocol": result.protocol,
        "k_max": fitted.k_max, "n0": fitted.n0, "log10_n0": math.log10(fitted.n0),
        "e0": _keyed(fitted.e0), "k": _keyed({n: float(fitted.k(n)) for n in fitted.e0}),
        "r2": {"L": fitted.r2_linear, "log_L": fitted.r2_log, "on": "fitted points"},
        "bounds": bounds.resolve(result.train.sizes).to_dict(),
        "sizes": [float(n) for n in sorted(fitted.e0)], "points": len(result.train),
    }
    if free_k is not None:
        report["free_k"] = {"k": _keyed(free_k.k), "e0": _keyed(free_k.e0),
                            "r2": {"L": free_k.r2_linear, "log_L": free_k.r2_log}}
    if alternative is not None:
        report["alternative"] = alternative.to_dict()
    if result.held_out is not None:
        report["prediction"] = {**result.errors(), **result.details,
                                "held_out_points": len(result.held_out)}
    if bootstrap is not None:
        report["bootstrap"] = bootstrap
    return _json_safe(report)


def write_fit_report(report: dict, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return path


def load_fit_report(path) -> tuple[fit_lib.SaturatingFit, dict]:
    """Read fit.json back as (SaturatingFit, the whole report dict)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fit file not found: {path}")
    report = json.loads(path.read_text())
    missing = [k for k in REQUIRED_KEYS if k not in report]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; keys found: {sorted(report)}")
    r2 = report.get("r2", {})
    fitted = fit_lib.SaturatingFit(
        k_max=float(report["k_max"]), n0=float(report["n0"]),
        e0={float(n): float(e) for n, e in report["e0"].items()},
        objective=report["objective"], r2_linear=r2.get("L"), r2_log=r2.get("log_L"))
    return fitted, report


def summary_text(rep: dict) -> str:
    """A few human-readable lines of a fit.json dict."""
    lines = [f"{rep['protocol']} fit of L vs {rep['x']} ({rep['variant']}, objective "
             f"{rep['objective']}): K_max = {rep['k_max']:.4g}, N_0 = {rep['n0']:.4g}, "
             f"R2(L) = {rep['r2']['L']:.4f}, R2(ln L) = {rep['r2']['log_L']:.4f}"]
    free = rep.get("free_k", {}).get("k", {})
    for n, e in rep["e0"].items():
        extra = f"  free k = {free[n]:.4f}" if n in free else ""
        lines.append(f"  N = {float(n):.4g}: k = {rep['k'][n]:.4f}  E = {e:.4f}{extra}")
    if "prediction" in rep:
        pred = rep["prediction"]
        lines.append(f"held-out prediction: RMSE(L) = {pred['rmse']:.4g}, "
                     f"MAPE(L) = {100 * pred['mape']:.2f} % over {pred['held_out_points']} points")
    if "bootstrap" in rep:
        b = rep["bootstrap"]
        for name, label in (("k_max", "K_max"), ("n0", "N_0")):
            v = b[name]
            lines.append(f"bootstrap over seeds ({b['replicates']} draws, "
                         f"{100 * b['level']:.0f} %): {label} sd {v['std']:.3g}, "
                         f"percentile [{v['low']:.4g}, {v['high']:.4g}], "
                         f"t [{v['t_low']:.4g}, {v['t_high']:.4g}]")
    return "\n".join(lines)
