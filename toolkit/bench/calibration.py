"""Estimates that learn: every measured bench calibrates that device's roofline estimate.

A roofline alone is a lower bound (peak throughput, no per-op dispatch), off by a factor
that depends on the device, the runtime and the precision. Each measured run stores the
model's roofline time, its node count and the measured p50 under
`toolkit.paths.config_dir()/calibration/<device>.json`. An estimate then fits, over the runs
of the same format and precision (else the same format, else any), measured ≈ k × roofline +
c × nodes (relative least squares, both terms non-negative; one model gives the ratio alone)
and says how many runs and models it learned from. A model already measured there is scaled
by its own runs.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

KEPT_RUNS_PER_MODEL = 5


def calibration_path(device: str) -> Path:
    from toolkit.paths import config_dir

    return config_dir() / "calibration" / (re.sub(r"[^A-Za-z0-9._-]", "_", device) + ".json")


def load_runs(device: str) -> list[dict]:
    path = calibration_path(device)
    try:
        return list(json.loads(path.read_text()).get("runs", []))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError) as error:
        logger.warning("ignoring the unreadable calibration file %s: %s", path, error)
        return []


def record_run(device: str, run: dict) -> int:
    """Store one measured run (keys: model_sha256, format, precision, shapes, roofline_ms, nodes,
    measured_ms, measured_at); returns how many runs the device now has."""
    from toolkit.artifacts import atomic_write_json

    runs = load_runs(device) + [run]
    same = [r for r in runs if _model_key(r) == _model_key(run)]
    if len(same) > KEPT_RUNS_PER_MODEL:
        drop = same[: len(same) - KEPT_RUNS_PER_MODEL]
        runs = [r for r in runs if not any(r is d for d in drop)]
    path = calibration_path(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"device": device, "runs": runs})
    return len(runs)


def _model_key(run: dict) -> tuple:
    return run.get("model_sha256"), json.dumps(run.get("shapes"), sort_keys=True)


def _per_model(runs: list[dict]) -> list[dict]:
    """One point per model and shapes: the median measured p50 of its runs."""
    groups: dict = {}
    for run in runs:
        groups.setdefault(_model_key(run), []).append(run)
    points = []
    for group in groups.values():
        measured = sorted(r["measured_ms"] for r in group)
        points.append({**group[-1], "measured_ms": measured[len(measured) // 2], "runs": len(group)})
    return points


def fit(points: list[dict]) -> dict:
    """measured ≈ k × roofline_ms + c × nodes, minimising the relative error."""
    import numpy as np

    roofline = np.array([p["roofline_ms"] for p in points], dtype=float)
    nodes = np.array([p["nodes"] for p in points], dtype=float)
    measured = np.array([p["measured_ms"] for p in points], dtype=float)
    candidates = []
    if len(points) >= 2:
        design = np.stack([roofline / measured, nodes / measured], axis=1)
        (k, c), *_ = np.linalg.lstsq(design, np.ones(len(points)), rcond=None)
        if k >= 0 and c >= 0:
            candidates.append((float(k), float(c)))
    ratio = roofline / measured  # k alone: least squares of k*r/m = 1
    if np.any(ratio > 0):
        candidates.append((float(np.sum(ratio) / np.sum(ratio ** 2)), 0.0))
    per_node = nodes / measured
    if np.any(per_node > 0):
        candidates.append((0.0, float(np.sum(per_node) / np.sum(per_node ** 2))))

    def error(kc):
        predicted = kc[0] * roofline + kc[1] * nodes
        return float(np.max(np.abs(predicted / measured - 1)))

    k, c = min(candidates, key=error)
    return {"k": k, "c_ms_per_node": c, "max_rel_error_in_fit": round(error((k, c)), 4)}


def calibrated_latency(device: str, *, model_format: str, precision: str, roofline_ms: float, nodes: int,
                       model_sha256: str | None = None, exclude_sha256: str | None = None) -> dict | None:
    """The calibrated estimate for one model, or None when the device has no usable runs.

    A model measured on this device before is scaled by its own runs (measured / roofline,
    the median), which also carries it to other shapes; others by the fit over similar models.
    """
    runs = [r for r in load_runs(device) if r.get("model_sha256") != exclude_sha256]
    own = sorted(r["measured_ms"] / r["roofline_ms"] for r in runs
                 if model_sha256 and r.get("model_sha256") == model_sha256 and r.get("roofline_ms"))
    if own:
        factor = own[len(own) // 2]
        return {"latency_ms": round(factor * roofline_ms, 6), "runs": len(own), "models": 1,
                "scope": "this model's own runs", "k": factor, "c_ms_per_node": 0.0}
    for scope, chosen in (("format and precision", [r for r in runs if r.get("format") == model_format
                                                    and r.get("precision") == precision]),
                          ("format", [r for r in runs if r.get("format") == model_format]),
                          ("any model", runs)):
        if chosen:
            points = _per_model(chosen)
            factors = fit(points)
            latency = factors["k"] * roofline_ms + factors["c_ms_per_node"] * nodes
            return {"latency_ms": round(latency, 6), "runs": len(chosen), "models": len(points),
                    "scope": f"runs of the same {scope}" if scope != "any model" else "runs of any model", **factors}
    return None
