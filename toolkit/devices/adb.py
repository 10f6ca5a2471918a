"""The `adb` transport: push a .tflite to /data/local/tmp and time it with LiteRT's
`benchmark_model` binary on the phone, then parse what that binary prints.

With `python:` in the profile's transport (a Python with numpy and a runtime on the
phone, e.g. Termux's), the runner runs there too, so `validate --device` and `drift` get
the phone's outputs back through `adb pull`.

No phone is attached where Edgeward is developed: the parser is tested on recorded
`benchmark_model` output (tests/data/benchmark_model*.txt), and the whole flow (get-state,
push, shell, pull, clean-up) runs in tests/test_adb_flow.py against tests/fake_adb/adb, a
stand-in that serves the emulated ARM64 board; see the README for a real phone.

Where each op ran comes from the same run: `--print_postinvoke_state=true` makes the tool print
the interpreter's node list after the timed runs (each node "delegated by node N" or "not
delegated"), which `parse_placement` turns into the record the device runner gives over ssh.

`adb shell` joins its arguments and hands them to the device's shell, so the remote
command is one string with every argument `shlex.quote`d.
"""

from __future__ import annotations

import re
import secrets
import shlex
import shutil
from pathlib import Path

from toolkit.devices.transport import Completed, Transport, stream
from toolkit.errors import BadInput, DeviceError, Unsupported

REMOTE_BASE = "/data/local/tmp"
DEFAULT_BINARY = "/data/local/tmp/benchmark_model"


class AdbTransport(Transport):
    name = "adb device"

    def __init__(self, transport: dict, device: str = "device", *, benchmark_binary: str | None = None):
        serial = transport.get("serial")
        if serial is not None and (not isinstance(serial, str) or serial.startswith("-")
                                   or not re.fullmatch(r"[A-Za-z0-9._:-]+", serial)):
            raise BadInput(f"adb serial {serial!r} is not valid")
        self.serial = serial
        self.binary = benchmark_binary or transport.get("benchmark_binary") or DEFAULT_BINARY
        self.device = device
        self.name = f"adb device {device}" + (f" ({serial})" if serial else "")
        self.python = transport.get("python")

    def adb(self, *args: str) -> list[str]:
        return ["adb", *(["-s", self.serial] if self.serial else []), *args]

    def shell(self, script: str, timeout: float = 60, on_line=None) -> Completed:
        completed = stream(self.adb("shell", script), timeout=timeout, on_line=on_line, what=self.name)
        self.classify(completed)
        return completed

    def _open(self) -> str:
        if shutil.which("adb") is None:
            raise DeviceError("adb is not installed on this host (Android platform-tools); needed for "
                              f"{self.device}")
        state = stream(self.adb("get-state"), timeout=20, what=self.name)
        if state.returncode != 0 or state.stdout.strip() != "device":
            raise DeviceError(f"{self.name}: not available ({(state.stderr or state.stdout).strip()[:200]})")
        workdir = f"{REMOTE_BASE}/edgeward-{secrets.token_hex(4)}"
        self.shell(f"mkdir -p {shlex.quote(workdir)}")
        return workdir

    def _close(self) -> None:
        try:
            self.shell(f"rm -rf {shlex.quote(self.workdir)}", timeout=30)
        except DeviceError:
            pass

    def push(self, local: Path, name: str) -> str:
        target = f"{self.workdir}/{name}"
        temporary = f"{self.workdir}/.{name}.tmp"
        completed = stream(self.adb("push", str(local), temporary), timeout=600, what=self.name)
        self.classify(completed)
        if completed.returncode != 0:
            raise DeviceError(f"{self.name}: adb push failed: {completed.stderr.strip()[-200:]}")
        self.shell(f"mv -f {shlex.quote(temporary)} {shlex.quote(target)}")
        return target

    def pull(self, name: str, local: Path) -> Path:
        completed = stream(self.adb("pull", f"{self.workdir}/{name}", str(local)), timeout=600, what=self.name)
        self.classify(completed)
        return local

    def command(self, argv: list[str]) -> list[str]:
        """The runner (or any argv) started inside the work folder, with the phone's Python
        for a .py script; `adb shell` hands the one quoted string to the phone's shell."""
        if argv and argv[0].endswith(".py"):
            if not self.python:
                raise DeviceError(f"{self.name}: no Python on the phone is configured; set 'python:' in the "
                                  f"profile's transport (e.g. Termux's) to run the Edgeward runner there")
            argv = [self.python, *argv]
        return self.adb("shell", f"cd {shlex.quote(self.workdir)} && {shlex.join(argv)}")

    def run(self, argv, *, timeout, on_line=None) -> Completed:
        completed = stream(self.command(argv), timeout=timeout, on_line=on_line, what=self.name)
        self.classify(completed)
        return completed

    def probe(self) -> dict:
        return {"transport": "adb", "serial": self.serial, "python": self.python}

    def classify(self, completed: Completed) -> None:
        text = (completed.stderr + completed.stdout).lower()
        if completed.returncode != 0 and any(s in text for s in ("device offline", "no devices", "not found",
                                                                 "device unauthorized")):
            raise DeviceError(f"{self.name}: {(completed.stderr or completed.stdout).strip()[:200]}")


def bench_adb(profile, model: Path, *, runs: int, warmup: int, threads: int | None, timeout: float,
              benchmark_binary: str | None = None) -> dict:
    if model.suffix.lower() != ".tflite":
        raise Unsupported(f"{profile.name}: the adb transport runs LiteRT's benchmark_model, which takes .tflite "
                          f"models only (found {model.suffix})")
    with AdbTransport(profile.transport, profile.name, benchmark_binary=benchmark_binary) as transport:
        binary = transport.binary
        if Path(binary).is_file():  # a binary on this host: push it and make it executable
            binary = transport.push(Path(binary), "benchmark_model")
            transport.shell(f"chmod 755 {shlex.quote(binary)}")
        graph = transport.push(model, "model.tflite")
        argv = [binary, f"--graph={graph}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
                f"--num_threads={threads or 4}", "--report_peak_memory_footprint=true",
                "--print_postinvoke_state=true"]  # printed after the timed runs: the timings are untouched
        completed = transport.shell(shlex.join(argv), timeout=timeout)
    parsed = parse_benchmark_model(completed.stdout + "\n" + completed.stderr)
    parsed.update(device=profile.name, transport={"type": "adb"}, runs_requested=runs)
    if not parsed["complete"]:
        parsed["error"] = f"benchmark_model stopped before its summary (exit {completed.returncode})"
    return parsed


def check_adb(profile) -> dict:
    with AdbTransport(profile.transport, profile.name) as transport:
        props = transport.shell("getprop ro.product.model; getprop ro.build.version.release; uname -m; "
                                f"ls {shlex.quote(transport.binary)} 2>/dev/null; grep MemAvailable /proc/meminfo")
    lines = props.stdout.splitlines()
    has_binary = any(line.strip() == transport.binary for line in lines)
    missing = [] if has_binary else [f"benchmark_model at {transport.binary} (adb push it, or --benchmark-binary)"]
    return {"device": profile.name, "kind": profile.kind, "transport": "adb", "facts": lines,
            "missing": missing, "ok": has_binary}


# ------------------------------------------------------------------ the parser

_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_STATS = re.compile(r"count=(\d+)(.*)")
_FIELD = re.compile(r"(\w+)=" + _NUMBER)
_SUMMARY = re.compile(r"Inference timings in us: Init: " + _NUMBER + r", First inference: " + _NUMBER
                      + r", Warmup \(avg\): " + _NUMBER + r", Inference \(avg\): " + _NUMBER)
_MEMORY = re.compile(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): init="
                     + _NUMBER + r" overall=" + _NUMBER)
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUMBER)
_DELEGATE = re.compile(r"Created TensorFlow Lite (.+?) delegate")
_REPLACED = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\)")
_THREADS = re.compile(r"Num threads: \[(\d+)\]")
_SIZE = re.compile(r"The input model file size \(MB\): " + _NUMBER)


def parse_benchmark_model(text: str) -> dict:
    """Figures from `benchmark_model` output (microseconds in, milliseconds out).

    The tool prints a `count=...` line for the warm-up block and one for the measured
    block, then the `Inference timings in us:` summary; without that summary the run did
    not finish and the result says `complete: False`.
    """
    lines = [re.sub(r"^(?:INFO: |I tflite\s*: )", "", line.strip()) for line in text.splitlines()]
    blocks = []
    for line in lines:
        match = _STATS.match(line)
        if match:
            fields = {key: float(value) for key, value in _FIELD.findall(line)}
            fields["count"] = int(match.group(1))
            blocks.append(fields)
    summary = next((m for m in map(_SUMMARY.search, lines) if m), None)
    measured = blocks[-1] if len(blocks) >= 2 or (blocks and summary) else None
    result: dict = {"mode": "bench", "runtime": {"name": "benchmark_model", "version": None},
                    "complete": summary is not None and measured is not None}

    def ms(value):
        return round(value / 1000, 4) if value is not None else None

    if measured:
        result["runs"] = measured["count"]
        result["latency_ms"] = {"p50": ms(measured.get("median")), "p90": None, "p99": None,
                                "mean": ms(measured.get("avg")), "std": ms(measured.get("std")),
                                "min": ms(measured.get("min")), "max": ms(measured.get("max")),
                                "p5": ms(measured.get("p5")), "p95": ms(measured.get("p95"))}
    if blocks:
        result["warmup"] = blocks[0]["count"] if len(blocks) >= 2 else None
    if summary:
        init, first, warm, avg = (float(g) for g in summary.groups())
        result.update(load_ms=ms(init), first_inference_ms=ms(first), warmup_avg_ms=ms(warm))
        result.setdefault("latency_ms", {})["mean"] = ms(avg)
    memory = next((m for m in map(_MEMORY.search, lines) if m), None)
    peak = next((m for m in map(_PEAK.search, lines) if m), None)
    result["peak_memory_mb"] = float(peak.group(1)) if peak else (float(memory.group(2)) if memory else None)
    delegates = [m.group(1) for m in map(_DELEGATE.search, lines) if m]
    replaced = next((m for m in map(_REPLACED.search, lines) if m), None)
    fell_back = any("will not be executed by the delegate" in line or "Falling back to" in line for line in lines)
    if replaced:
        result["delegate"] = f"{replaced.group(3)} ({replaced.group(1)} of {replaced.group(2)} nodes)"
    elif delegates:
        result["delegate"] = f"{delegates[-1]} delegate"
    else:
        result["delegate"] = "CPU builtin kernels (no delegate)"
    result["delegate_fallback"] = fell_back or bool(replaced and replaced.group(1) != replaced.group(2))
    threads = next((m for m in map(_THREADS.search, lines) if m), None)
    result["threads"] = int(threads.group(1)) if threads else None
    size = next((m for m in map(_SIZE.search, lines) if m), None)
    result["model_size_mb"] = float(size.group(1)) if size else None
    result["placement"] = parse_placement(lines)
    return result


_NODE = re.compile(r"^Node\s+(\d+) Operator (?:Builtin Code\s+-?\d+ (\S+)|Custom Name (\S+))\s*"
                   r"(?:\((delegated by node (\d+)|not delegated)\))?")
_STATE_BEGINS = "interpreter post-invoke state begins"
DELEGATE_NAMES = {"TfLiteXNNPackDelegate": "XNNPACK delegate", "TfLiteGpuDelegateV2": "GPU delegate",
                  "TfLiteNnapiDelegate": "NNAPI delegate"}


def parse_placement(lines: list[str]) -> dict | None:
    """Where each node ran, from the interpreter state benchmark_model prints
    (`--print_postinvoke_state`, tflite::PrintInterpreterState); else the counts of its
    "Replacing N out of M node(s)" line (no op names); None when it printed neither.

    Nodes of the primary subgraph only: a node with "(delegated by node D)" ran in delegate
    D's partition, "(not delegated)" on the builtin kernels; a node with a custom name and no
    status is a delegate's partition itself."""
    if any(_STATE_BEGINS in line for line in lines):
        last = max(i for i, line in enumerate(lines) if _STATE_BEGINS in line)
        lines = lines[last:]
    nodes, partitions, previous = [], [], -1
    for line in lines:
        match = _NODE.match(line)
        if not match:
            continue
        index = int(match.group(1))
        if index <= previous:
            break  # the next subgraph's nodes
        previous = index
        builtin, custom, status = match.group(2), match.group(3), match.group(4)
        if custom and status is None:
            partitions.append(custom)
        else:
            nodes.append((index, builtin or custom, bool(status and status.startswith("delegated"))))
    if not nodes:
        return _placement_from_log(lines)
    fallback = [(index, op) for index, op, delegated in nodes if not delegated]
    names = sorted({DELEGATE_NAMES.get(name, name) for name in partitions})
    return {"runtime": "benchmark_model", "accelerator": " + ".join(names) or None, "nodes": len(nodes),
            "delegated_nodes": len(nodes) - len(fallback), "partitions": len(partitions),
            "fallback_nodes": [f"{op}#{index}" for index, op in fallback],
            "fallback_ops": sorted({op for _, op in fallback}),
            "fallback_pct": round(100.0 * len(fallback) / len(nodes), 3),
            "basis": "nodes (benchmark_model's interpreter state; it gives no per-op time without op profiling)"}


def _placement_from_log(lines: list[str]) -> dict | None:
    replaced = [m for m in map(_REPLACED.search, lines) if m]
    if not replaced:
        return None
    last = replaced[-1]  # with two delegates, the last line counts what the last one left
    taken, total = int(last.group(1)), int(last.group(2))
    return {"runtime": "benchmark_model", "accelerator": DELEGATE_NAMES.get(last.group(3), last.group(3)),
            "nodes": total, "delegated_nodes": taken, "partitions": None, "fallback_nodes": [], "fallback_ops": [],
            "fallback_pct": round(100.0 * (total - taken) / total, 3) if total else 0.0,
            "basis": "nodes (benchmark_model's delegate log; which ops fell back is not printed)"}
