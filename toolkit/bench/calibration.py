"""Estimates that learn: every measured bench calibrates the roofline estimates of that device
and of every device of the same CPU family.

A roofline alone is a lower bound (peak throughput, no per-op dispatch), off by a factor that
depends on the op class, the precision, the runtime and the CPU. Each measured run stores, under
`toolkit.paths.config_dir()/calibration/<device>.json`, the model's roofline time split by op
class (conv, matmul, elementwise, other), the nodes the runtime dispatches, the measured p50 and
the device's CPU family. An estimate for device D learns from D's own runs first, else from the
runs of devices and hosts of D's CPU family (`cpu_family`; this host's is read from its CPU
flags, e.g. x86-64-avx2), and says which ("calibrated from 12 runs on localhost, same family
x86-64-avx2"). A model already measured there is scaled by its own runs; others by `fit_model`:

    latency = format x precision x sum over op classes (efficiency_class x roofline_class)
              + (per-node dispatch x dispatched nodes + per-inference overhead), per runtime

fitted in log space (relative errors) with every factor held near a prior (a factor of about
three either way), so that what the runs do not inform (an int8 model when only float ones were
measured) stays at a physically sensible value: int8 without int8 dot-product instructions
(VNNI, SDOT, I8MM) is priced at about float speed, not at the int8 peak.
"""

from __future__ import annotations

import json
import logging
import platform
import re
from pathlib import Path

logger = logging.getLogger(__name__)

KEPT_RUNS_PER_MODEL = 5
HOST_SOURCE = "read on this host at run time"  # how profiles.py marks a figure read from this host
# emulated/ARM families (QEMU_CPU names) with int8 dot-product instructions (SDOT/UDOT or I8MM)
INT8_DOT_FAMILIES = ("cortex-a55", "cortex-a76", "cortex-a77", "cortex-a78", "cortex-x", "neoverse", "apple")
X86_INT8_DOT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def host_cpu_family() -> str:
    """This host's CPU family as the kernels see it: x86-64-avx2, x86-64-avx512-vnni, arm64-dotprod …"""
    from toolkit.common.cpu import host_cpu_flags

    machine = platform.machine().lower()
    flags = host_cpu_flags()
    if machine in ("x86_64", "amd64"):
        level = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
        return f"x86-64-{level}" + ("-vnni" if flags & X86_INT8_DOT_FLAGS else "")
    if machine in ("aarch64", "arm64"):
        return "arm64-" + ("i8mm" if "i8mm" in flags else "dotprod" if "asimddp" in flags else "neon")
    return machine or "unknown"


def cpu_family_of(profile) -> str | None:
    """The profile's `cpu_family`; for this host (and profiles that take their CPU from it, like the
    ssh test bed on loopback) the host's; None when the profile does not say."""
    if profile.cpu_family:
        return profile.cpu_family
    cpu = profile.figure("cpu") or {}
    if profile.name == "localhost" or str(cpu.get("source", "")).startswith(HOST_SOURCE):
        return host_cpu_family()
    return None


def has_int8_dot(family: str | None) -> bool:
    """Whether a CPU family multiplies int8 without widening (VNNI, SDOT, I8MM): without it an int8
    kernel is not 4x a float one (onnxruntime's u8s8 path on AVX2 runs at about fp32 speed)."""
    if not family:
        return False
    return family.endswith("-vnni") or "dotprod" in family or "i8mm" in family or any(
        name in family for name in INT8_DOT_FAMILIES)


def calibration_dir() -> Path:
    from toolkit.paths import config_dir

    return config_dir() / "calibration"


def calibration_path(device: str) -> Path:
    return calibration_dir() / (re.sub(r"[^A-Za-z0-9._-]", "_", device) + ".json")


def load_runs(device: str) -> list[dict]:
    return _read_runs(calibration_path(device))


def _read_runs(path: Path) -> list[dict]:
    try:
        runs = json.loads(path.read_text()).get("runs", [])
        return [run for run in runs if isinstance(run, dict) and run.get("measured_ms") and run.get("roofline_ms")]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError) as error:
        logger.warning("ignoring the unreadable calibration file %s: %s", path, error)
        return []


def family_runs(family: str, *, except_device: str) -> dict[str, list[dict]]:
    """{device: runs} of every other device whose stored runs are of CPU family `family`."""
    found: dict[str, list[dict]] = {}
    folder = calibration_dir()
    if not family or not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        runs = [run for run in _read_runs(path) if run.get("cpu_family") == family]
        device = runs[0].get("device", path.stem) if runs else None
        if runs and device != except_device:
            found[device] = runs
    return found


def record_run(device: str, run: dict) -> int:
    """Store one measured run (keys: model_sha256, format, precision, shapes, roofline_ms, by_class,
    dispatched_nodes, nodes, measured_ms, measured_at, cpu_family); returns the device's run count."""
    from toolkit.artifacts import atomic_write_json

    runs = load_runs(device) + [{"device": device, **run}]
    same = [r for r in runs if _model_key(r) == _model_key(run)]
    if len(same) > KEPT_RUNS_PER_MODEL:
        drop = same[: len(same) - KEPT_RUNS_PER_MODEL]
        runs = [r for r in runs if not any(r is d for d in drop)]
    path = calibration_path(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"device": device, "runs": runs})
    return len(runs)


def run_point(figures: dict, family: str | None) -> dict:
    """What a calibration point records of an estimate (`toolkit.bench.estimate.estimate`)."""
    latency = figures.get("latency") or {}
    by_class = latency.get("by_class") or {}
    classes = {name: row for name, row in (by_class.get("classes") or {}).items() if name != "folded"}
    return {"format": figures["model"]["format"], "precision": figures["model"]["precision"],
            "roofline_ms": latency.get("latency_ms"), "nodes": figures["node_count"],
            "dispatched_nodes": by_class.get("dispatched_nodes", figures["node_count"]),
            "by_class": {name: row["roofline_ms"] for name, row in classes.items()},
            "compute_by_class": {name: row["compute_ms"] for name, row in classes.items()},
            "memory_ms": round(sum(row["memory_ms"] for row in classes.values()), 6),
            "peak_gops": latency.get("peak_gops"), "cpu_family": family}


def _model_key(run: dict) -> tuple:
    return run.get("model_sha256"), json.dumps(run.get("shapes"), sort_keys=True)


def per_model(runs: list[dict]) -> list[dict]:
    """One point per model and shapes: the fastest p50 of its runs (a busy device only ever slows
    a run down, so the fastest is the least disturbed)."""
    groups: dict = {}
    for run in runs:
        groups.setdefault(_model_key(run), []).append(run)
    points = []
    for group in groups.values():
        points.append({**group[-1], "measured_ms": min(r["measured_ms"] for r in group), "runs": len(group)})
    return points


def calibrated_estimate(profile, figures: dict, *, model_sha256: str | None = None,
                        exclude_sha256: set | None = None) -> dict | None:
    """The calibrated latency of the model `figures` describes on `profile`, or None when neither
    the device nor a device of its CPU family has usable runs.

    The result says what it learned from: `runs`, `models`, `source` (the devices), `scope`
    and `basis`, one line for a report.
    """
    family = cpu_family_of(profile)
    excluded = exclude_sha256 or set()
    own = [r for r in load_runs(profile.name) if r.get("model_sha256") not in excluded]
    if own:
        runs, devices = own, [profile.name]
    else:
        shared = family_runs(family, except_device=profile.name) if family else {}
        shared = {device: [r for r in runs if r.get("model_sha256") not in excluded] for device, runs in shared.items()}
        shared = {device: runs for device, runs in shared.items() if runs}
        if not shared:
            return None
        runs, devices = [r for device_runs in shared.values() for r in device_runs], sorted(shared)
    roofline_ms = (figures.get("latency") or {}).get("latency_ms")
    where = ", ".join(devices) + ("" if devices == [profile.name] else f", same family {family}")
    this_model = [r["measured_ms"] / r["roofline_ms"] for r in runs if model_sha256 and r.get("model_sha256") == model_sha256]
    if this_model and roofline_ms:
        factor = min(this_model)  # the least disturbed of its runs, as in per_model
        return {"latency_ms": round(factor * roofline_ms, 6), "runs": len(this_model), "models": 1,
                "source": devices, "cpu_family": family, "scope": "this model's own runs", "factor": round(factor, 4),
                "basis": f"calibrated from {len(this_model)} runs of this model on {where}"}
    point = run_point(figures, family)
    points = per_model(runs)
    point["peak_gops"] = (figures.get("latency") or {}).get("peak_gops")
    params = fit_model(points, int8_dot=has_int8_dot(family))
    latency_ms = predict(params, point)
    informed = sum(1 for p in points if p.get("format") == point["format"] and p.get("precision") == point["precision"])
    return {"latency_ms": round(latency_ms, 6), "runs": len(runs), "models": len(points), "source": devices,
            "cpu_family": family, "fit": {name: round(value, 6) for name, value in params.items()},
            "scope": f"fit over {len(points)} models, {informed} of the same format and precision",
            "basis": f"calibrated from {len(runs)} runs of {len(points)} models on {where}"}


# ------------------------------------------------------------------ the latency model

# Priors: (value, spread), the spread a factor the value is believed within. One scale for all
# compute (a roofline at peak is far from what kernels reach: weakly held), op classes, formats
# and precisions as deviations from it (firmly held near 1, so a few runs cannot make them wild),
# per-node dispatch and per-inference overhead in ms on a CPU of REFERENCE_GOPS fp32 peak.
COMPUTE_SCALE_PRIOR = (3.0, 10.0)
MEMORY_SCALE_PRIOR = (0.5, 4.0)  # x bytes moved at the profile's DRAM bandwidth
OP_CLASS_PRIOR = {"conv": (1.0, 1.6), "matmul": (1.0, 1.6), "elementwise": (1.0, 1.6), "other": (1.0, 1.6)}
FORMAT_PRIOR = (1.0, 1.6)
DISPATCH_PRIOR_MS = {"onnx": (0.002, 3.0), "tflite": (0.0005, 3.0)}
OVERHEAD_PRIOR_MS = {"onnx": (0.015, 3.0), "tflite": (0.005, 3.0)}
REFERENCE_GOPS = 100.0
DATA_SPREAD = 1.15  # a measured p50 within about 15% (a shared host, a different day)


def precision_prior(precision: str, int8_dot: bool) -> float:
    """Time of a kernel of this precision relative to its roofline at that precision's peak, as a
    multiple of fp32's. The profile's int8 peak assumes fast int8; without dot-product instructions
    an int8 kernel widens to int16 and runs near float speed, so against a 2x-fp32 peak it costs ~2x."""
    if precision in ("int8", "int4"):
        return 1.3 if int8_dot else 2.0
    if precision in ("fp16", "bf16"):
        return 1.5
    return 1.0


def _priors(points: list[dict], int8_dot: bool) -> dict[str, tuple[float, float]]:
    """The model's factors (name -> (prior value, spread)) that these points and an estimate can use."""
    import itertools

    formats = sorted({p.get("format") or "onnx" for p in points} | {"onnx", "tflite"})
    precisions = sorted({p.get("precision") or "fp32" for p in points} | {"fp32", "int8"})
    priors = {"compute_scale": COMPUTE_SCALE_PRIOR, "memory_scale": MEMORY_SCALE_PRIOR}
    priors.update({f"class:{name}": prior for name, prior in OP_CLASS_PRIOR.items()})
    for fmt, precision in itertools.product(formats, precisions):
        if (fmt, precision) != ("onnx", "fp32"):  # the reference the others deviate from
            spread = FORMAT_PRIOR[1] if precision == "fp32" else 2.0
            priors[f"precision:{fmt}:{precision}"] = (precision_prior(precision, int8_dot), spread)
    for fmt in formats:
        priors[f"dispatch_ms:{fmt}"] = DISPATCH_PRIOR_MS.get(fmt, (0.002, 3.0))
        priors[f"overhead_ms:{fmt}"] = OVERHEAD_PRIOR_MS.get(fmt, (0.015, 3.0))
    return priors


def predict(params: dict[str, float], point: dict) -> float:
    """The model's latency (ms) for a point (its roofline by class, dispatched nodes, peak)."""
    fmt, precision = point.get("format") or "onnx", point.get("precision") or "fp32"
    if point.get("compute_by_class"):  # compute and memory apart: small tensors live in cache, not DRAM
        by_class, memory = point["compute_by_class"], params["memory_scale"] * point.get("memory_ms", 0.0)
    else:  # a point of an older calibration file: its roofline alone
        by_class, memory = point.get("by_class") or {"other": point["roofline_ms"]}, 0.0
    compute = sum(params.get(f"class:{name}", 1.0) * ms for name, ms in by_class.items())
    compute *= params["compute_scale"] * params.get(f"precision:{fmt}:{precision}",
                                                    precision_prior(precision, False))
    compute += memory
    scale = REFERENCE_GOPS / point["peak_gops"] if point.get("peak_gops") else 1.0
    nodes = point.get("dispatched_nodes", point.get("nodes", 0))
    overhead = (params.get(f"dispatch_ms:{fmt}", 0.002) * nodes + params.get(f"overhead_ms:{fmt}", 0.015)) * scale
    return compute + overhead


def fit_model(points: list[dict], *, int8_dot: bool = False) -> dict[str, float]:
    """The factors that best explain the points' measured p50s (relative errors), each pulled
    towards its prior; with no points, the priors."""
    import numpy as np
    from scipy.optimize import least_squares

    priors = _priors(points, int8_dot)
    names = list(priors)
    prior_log = np.log([priors[name][0] for name in names])
    prior_weight = 1 / np.log([priors[name][1] for name in names])
    measured_log = np.log([p["measured_ms"] for p in points])
    data_weight = 1 / np.log(DATA_SPREAD)

    def residuals(log_values):
        params = dict(zip(names, np.exp(log_values), strict=True))
        predicted = np.log([predict(params, p) for p in points]) if points else np.array([])
        return np.concatenate([(predicted - measured_log) * data_weight, (log_values - prior_log) * prior_weight])

    solution = least_squares(residuals, prior_log, method="trf")
    return dict(zip(names, (float(v) for v in np.exp(solution.x)), strict=True))


def fit(points: list[dict]) -> dict:
    """The two-term fit of earlier calibration files: measured ≈ k × roofline_ms + c × nodes
    (relative least squares, both terms non-negative)."""
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
    ratio = roofline / measured
    if np.any(ratio > 0):
        candidates.append((float(np.sum(ratio) / np.sum(ratio ** 2)), 0.0))
    per_node = nodes / measured
    if np.any(per_node > 0):
        candidates.append((0.0, float(np.sum(per_node) / np.sum(per_node ** 2))))

    def error(kc):
        return float(np.max(np.abs((kc[0] * roofline + kc[1] * nodes) / measured - 1)))

    k, c = min(candidates, key=error)
    return {"k": k, "c_ms_per_node": c, "max_rel_error_in_fit": round(error((k, c)), 4)}
