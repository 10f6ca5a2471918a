"""The machine's state during a bench (governor, clock, temperature) and whether two runs
can be compared: a run on another governor or a throttled CPU is not the same experiment."""

from __future__ import annotations


def conditions_line(record: dict) -> str | None:
    """One line: what the device said about its CPU while the runs were timed."""
    cpu = record.get("cpu") or {}
    parts = []
    if cpu.get("governor"):
        parts.append(f"governor {cpu['governor']}")
    if cpu.get("freq_mhz"):
        top = f" of {cpu['max_freq_mhz']} MHz" if cpu.get("max_freq_mhz") else ""
        parts.append(f"clock {cpu['freq_mhz']} MHz{top}")
    if cpu.get("temperature_c") is not None:
        before = cpu.get("temperature_c_before")
        parts.append(f"temperature {before:.0f} -> {cpu['temperature_c']:.0f} °C" if before is not None
                     else f"temperature {cpu['temperature_c']:.0f} °C")
    if cpu.get("throttling"):
        parts.append("THROTTLING")
    if not cpu:
        return None
    return "cpu     " + ("; ".join(parts) if parts else "governor, clock and temperature not exposed by this device")


def run_warnings(record: dict) -> list[str]:
    """Why this run's figures may not be trusted on their own."""
    warnings = []
    if (record.get("cpu") or {}).get("throttling"):
        warnings.append("the CPU was throttling during the runs: its clock was held down; do not publish this number")
    return warnings


def compare_warnings(current: dict, previous: dict) -> list[str]:
    """Why two bench records should not be compared as they are (empty when they can)."""
    warnings = []
    now, then = current.get("cpu") or {}, previous.get("cpu") or {}
    if now.get("governor") and then.get("governor") and now["governor"] != then["governor"]:
        warnings.append(f"the runs used different CPU governors ({then['governor']} then, {now['governor']} now)")
    for label, cpu in (("the earlier", then), ("this", now)):
        if cpu.get("throttling"):
            warnings.append(f"{label} run was throttling")
    if (current.get("model") or {}).get("sha256") != (previous.get("model") or {}).get("sha256"):
        warnings.append("the runs timed different model files")
    if current.get("input_shapes") and previous.get("input_shapes") and \
            current["input_shapes"] != previous["input_shapes"]:
        warnings.append(f"the runs used different input shapes ({previous['input_shapes']} then, "
                        f"{current['input_shapes']} now)")
    return warnings


def comparison(current: dict, previous: dict) -> dict:
    """p50 and p99 of this run against an earlier one, with the reasons not to trust the ratio."""
    def ratio(key):
        a, b = (current.get("latency_ms") or {}).get(key), (previous.get("latency_ms") or {}).get(key)
        return round(a / b, 4) if a and b else None

    return {"previous": (previous.get("model") or {}).get("path"), "p50_ratio": ratio("p50"),
            "p99_ratio": ratio("p99"), "warnings": compare_warnings(current, previous)}
