"""Helpers shared by the benchmark scripts: machine description, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib import metadata

    versions = {}
    for name in ("onnxruntime", "onnx", "torch", "ai-edge-litert", "optimum", "optimum-onnx", "transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "libraries": versions}


def time_call(fn, *, warmup: int = 10, runs: int = 100) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "mean_ms": statistics.fmean(samples),
            "p90_ms": samples[int(0.9 * (len(samples) - 1))], "runs": runs}


def wall(command: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - started


def edgeward(*args) -> list[str]:
    return [sys.executable, "-m", "toolkit", *map(str, args)]


def write_results(name: str, data: dict, table_lines: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    m = data["machine"]
    header = [f"# {name}", "", f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, {data['date']}", ""]
    (RESULTS / f"{name}.md").write_text("\n".join(header + table_lines) + "\n")
    print("\n".join(table_lines))
    print(f"\nwritten: {RESULTS / (name + '.json')}, {RESULTS / (name + '.md')}")
