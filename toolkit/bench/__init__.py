"""Latency and memory of a model on a device: measured through the device's transport
(the same runner everywhere), or estimated from the graph and the device profile.

The result carries what the break-even report needs: the model (path, sha256, size), the
device with its power figures (each with its source or marked estimate), and `latency_ms`
{p50, p90, p99, mean, std, min, max}. `complete` is False when a run was cut short.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

from toolkit.common.units import human_bytes, human_ms, human_number
from toolkit.errors import DeviceError, GateFailed

logger = logging.getLogger(__name__)

SOURCE_SUFFIXES = (".pt2", ".pt", ".pth", ".safetensors")  # models `edgeward export` converts


def model_record(path: Path) -> dict:
    from toolkit.artifacts import sha256_file

    return {"path": str(path), "format": path.suffix.lower().lstrip("."), "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size}


def device_record(profile) -> dict:
    record = {"name": profile.name, "kind": profile.kind, "description": profile.description,
              "transport": profile.transport.get("type"), "power_w": profile.power_w(),
              "unit_price_usd": profile.figure("unit_price_usd")}
    if profile.emulated:
        record.update(emulated=True, cpu_family=profile.cpu_family)
    return record


EMULATION_NOTE = ("timed under emulation (QEMU on this host): numerics and crashes are the device's, "
                  "timings are not; never price or publish them")


def is_emulated(record: dict) -> bool:
    """A bench record whose timings come from an emulated board (never device timings)."""
    device = record.get("device") if isinstance(record.get("device"), dict) else {}
    return bool(record.get("emulated") or device.get("emulated") or record.get("timing") == "emulated")


def bench(model, *, device: str = "localhost", runs: int = 50, warmup: int = 5, threads: int | None = None,
          estimate: bool = False, profiles_dir=None, benchmark_binary: str | None = None,
          timeout: float = 600, data=None, shapes=None, seq_len: int | None = None,
          calibrate: bool = True) -> dict:
    """Measure (or with `estimate=True`, estimate) a model's latency on a device.

    `data` (an .npz or builtin:digits) gives the inputs: its first example (or the model's
    fixed batch) is timed; 0-d inputs (a sample rate) go whole. Without it, seeded random
    inputs at the shapes `toolkit.bench.shapes.resolve_shapes` finds (`shapes`: NAME=AxB
    items; `seq_len`: the sequence length of token inputs); `record["shapes"]` says which.
    A measured run calibrates the device's estimates (`toolkit.bench.calibration`) unless
    `calibrate` is False or the timings are emulated.

    A measurement cut short (the connection lost mid-run) raises DeviceError whose
    `.partial` holds the timings that arrived, marked `complete: False`.
    """
    from toolkit.artifacts import resolve_model
    from toolkit.devices import bench_on_device, get_profile

    profile = get_profile(device, profiles_dir)
    if str(model).startswith("builtin:"):
        from toolkit.errors import BadInput

        raise BadInput(f"{model}: bench runs an .onnx or .tflite model; export it first: "
                       f"edgeward export {model} --to onnx")
    path = resolve_model(model)
    check_model_file(path, model)
    record = {"model": model_record(path), "device": device_record(profile),
              "host": {"platform": platform.platform(), "python": platform.python_version()},
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    resolved = None
    if data is None:
        from toolkit.bench.shapes import resolve_shapes

        resolved = resolve_shapes(path, shapes=shapes, seq_len=seq_len)
        record["shapes"] = resolved
    if estimate:
        from toolkit.bench.estimate import estimate as estimate_model

        figures = estimate_model(path, profile, input_shapes={k: v["shape"] for k, v in (resolved or {}).items()})
        latency = figures["latency"] or {}
        record.update({k: v for k, v in figures.items() if k not in ("model", "device")})
        record.update(mode="estimate", estimate=True, complete=True)
        record["model"].update(precision=figures["model"]["precision"])
        record["latency_ms"] = {"p50": latency.get("latency_ms"), "mean": latency.get("latency_ms")}
        apply_calibration(record, profile)
        return record
    inputs = None
    if data is not None:
        from toolkit.data import load_data

        inputs = load_data(data).inputs
        record["data"] = str(data)
    elif profile.transport.get("type") != "adb":  # benchmark_model on a phone makes its own inputs
        from toolkit.bench.shapes import sample_inputs

        inputs = sample_inputs(resolved)
    measured = bench_on_device(path, device, runs=runs, warmup=warmup, threads=threads, profiles_dir=profiles_dir,
                               benchmark_binary=benchmark_binary, timeout=timeout, inputs=inputs)
    measured.pop("device", None)
    record.update(measured)
    record.update(mode="measured", estimate=False)
    if profile.emulated:
        record.update(emulated=True, timing="emulated", timing_note=EMULATION_NOTE)
    if not record.get("complete"):
        error = DeviceError(f"{record.get('error', 'the run did not finish')}; "
                            f"{record.get('runs', 0)} of {runs} runs arrived (result marked incomplete)")
        error.partial = record
        raise error
    if calibrate and not profile.emulated:
        calibrate_from(record, path, profile)
    return record


def apply_calibration(record: dict, profile) -> None:
    """Replace the roofline p50 by the calibrated estimate where the device, or a device of its CPU
    family, has measured runs."""
    from toolkit.bench.calibration import calibrated_estimate, cpu_family_of

    roofline_ms = (record.get("latency") or {}).get("latency_ms")
    if roofline_ms is None:
        record["calibration"] = {"calibrated": False, "why": "no roofline for this device"}
        return
    calibrated = calibrated_estimate(profile, record, model_sha256=record["model"]["sha256"])
    if calibrated is None:
        family = cpu_family_of(profile)
        record["calibration"] = {"calibrated": False, "runs": 0, "cpu_family": family,
                                 "why": f"no measured bench on {profile.name}"
                                        + (f" or a device of its CPU family {family}" if family else "")
                                        + f" yet (edgeward bench MODEL --device {profile.name})"}
        return
    record["calibration"] = {"calibrated": True, "roofline_ms": roofline_ms, **calibrated}
    record["latency_ms"] = {"p50": calibrated["latency_ms"], "mean": calibrated["latency_ms"]}


def calibrate_from(record: dict, path: Path, profile) -> None:
    """Store this measured run as a calibration point for the estimates of the device and its CPU family."""
    from toolkit.bench.calibration import cpu_family_of, record_run, run_point
    from toolkit.bench.estimate import estimate as estimate_model

    try:
        figures = estimate_model(path, profile, input_shapes=record.get("input_shapes"))
        point = run_point(figures, cpu_family_of(profile))
        if not point["roofline_ms"]:
            return
        runs = record_run(profile.name, {
            "model_sha256": record["model"]["sha256"], "model": record["model"]["path"], **point,
            "shapes": record.get("input_shapes"), "threads": record.get("threads"),
            "measured_ms": record["latency_ms"]["p50"], "measured_at": record["measured_at"]})
        record["calibration"] = {"recorded": True, "device_runs": runs, "roofline_ms": point["roofline_ms"],
                                 "cpu_family": point["cpu_family"]}
    except Exception as error:  # a calibration point is a bonus, never a reason to lose the measurement
        logger.warning("could not record a calibration point for %s: %s", profile.name, error)


def check_model_file(path: Path, spec) -> None:
    """A wrong or corrupt local file is bad input (exit 2), caught before any device is involved."""
    from toolkit.errors import BadInput
    from toolkit.safety.onnx import check_onnx_file
    from toolkit.safety.tflite import check_tflite_file

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        check_onnx_file(path)
    elif suffix == ".tflite":
        check_tflite_file(path)
    else:
        hint = f"; export it first: edgeward export {spec} --to onnx" if suffix in SOURCE_SUFFIXES else ""
        raise BadInput(f"{path}: bench takes an .onnx or .tflite model (found {suffix or 'no suffix'}){hint}")


def check_fit(record: dict) -> None:
    """A gate: an estimate that does not fit the device is exit 1."""
    fit = record.get("fit") or {}
    if fit and not fit.get("fits", True):
        reasons = []
        if not fit.get("fits_ram"):
            reasons.append(f"needs {fit['ram_needed_mb']:.3g} MB of RAM, the device has {fit['ram_mb']:.3g} MB")
        if not fit.get("fits_storage"):
            reasons.append(f"the {fit['model_mb']:.3g} MB model exceeds {fit['storage_mb']:.3g} MB of storage/flash")
        raise GateFailed(f"the model does not fit {record['device']['name']}: {'; '.join(reasons)}")


def human_summary(record: dict) -> str:
    model = record["model"]
    lines = [f"model   {model['path']} ({model['format']}, {human_bytes(model['size_bytes'])})",
             f"device  {record['device']['name']} ({record['device']['kind']})"]
    if record.get("estimate"):
        latency = record.get("latency") or {}
        fit = record["fit"]
        lines += [
            f"ESTIMATE ({record['why']})",
            f"params  {record['parameters']:,}   FLOPs {record['flops']:,}   MACs {record['macs']:,}   "
            f"precision {model.get('precision')}",
            f"memory  activations peak {fit['activation_peak_mb']:.3f} MB; needs {fit['ram_needed_mb']:.3f} MB of "
            f"{fit['ram_mb']} MB RAM -> {'fits' if fit['fits'] else 'DOES NOT FIT'}",
        ]
        for row in record.get("latency_by_accelerator", []):
            lines.append(f"latency {human_ms(row['latency_ms'])} on {row['accelerator']} ({row['precision']} peak "
                         f"{row['peak_gops']:g} GOPS, {row['memory_bandwidth_gbps']:g} GB/s): {row['bound']}-bound")
        lines += [line for line in (shapes_line(record), calibration_line(record)) if line]
        return "\n".join(lines)
    latency = record["latency_ms"]
    runtime = record.get("runtime") or {}
    emulated = is_emulated(record)
    if emulated:
        lines.append(f"EMULATED {EMULATION_NOTE}")
    lines += [
        f"runtime {runtime.get('name')} {runtime.get('version')} via {record.get('delegate')}, threads "
        f"{record.get('threads')}",
        f"{'emulated latency' if emulated else 'latency'} p50 {human_ms(latency['p50'])}  p90 {human_ms(latency.get('p90'))}  p99 {human_ms(latency.get('p99'))}  "
        f"mean {human_ms(latency['mean'])} ± {human_ms(latency.get('std'))} over {record.get('runs')} runs "
        f"(warm-up {record.get('warmup')})",
        f"load    {human_ms(record.get('load_ms'))}; first inference {human_ms(record.get('first_inference_ms'))}; "
        f"peak RSS {human_number(record.get('peak_rss_mb') or record.get('peak_memory_mb'))} MB",
    ]
    if latency.get("p95") is not None:
        lines.append(f"tail    p95 {human_ms(latency['p95'])}  p99 {human_ms(latency.get('p99'))}  "
                     f"max {human_ms(latency.get('max'))}")
    from toolkit.bench.conditions import conditions_line, run_warnings
    from toolkit.bench.placement import placement_line

    lines += [line for line in (shapes_line(record), conditions_line(record)) if line]
    if "placement" in record:
        lines.append(placement_line(record["placement"]))
    if record.get("drift"):
        lines.append(f"DRIFT   the last third of runs was {record['drift_ratio']:.2f}x the first third "
                     f"(throttling or contention): do not publish this number")
    lines += [f"WARNING {warning}" for warning in run_warnings(record)]
    comparison = record.get("comparison")
    if comparison:
        lines.append(f"compare p50 {comparison['p50_ratio']}x, p99 {comparison['p99_ratio']}x of {comparison['previous']}")
        lines += [f"WARNING not comparable as is: {warning}" for warning in comparison["warnings"]]
    return "\n".join(lines)


def shapes_line(record: dict) -> str | None:
    """Which input shapes were timed or estimated, and where each came from."""
    if record.get("shapes"):
        from toolkit.bench.shapes import shapes_text

        return f"shapes  {shapes_text(record['shapes'])}"
    if record.get("input_shapes"):
        return "shapes  " + "; ".join(f"{name} {'x'.join(str(d) for d in shape)}"
                                      for name, shape in record["input_shapes"].items()) + \
            (f" (from {record['data']})" if record.get("data") else "")
    return None


def calibration_line(record: dict) -> str | None:
    calibration = record.get("calibration")
    if not calibration:
        return None
    if not calibration.get("calibrated"):
        return f"UNCALIBRATED roofline only: {calibration.get('why')}"
    where = ", ".join(calibration.get("source") or [])
    family = calibration.get("cpu_family")
    if where and family and calibration.get("source") != [record["device"]["name"]]:
        where += f", same family {family}"
    return (f"CALIBRATED {human_ms(calibration['latency_ms'])} from {calibration['runs']} measured runs of "
            f"{calibration['models']} models on {where or 'this device'} ({calibration['scope']}; "
            f"roofline {human_ms(calibration['roofline_ms'])})")
