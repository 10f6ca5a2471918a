"""Devices: profiles, and running models on them through a transport.

    get_profile(name, profiles_dir=None) -> Profile
    list_profiles(profiles_dir=None) -> (profiles, problems)
    check_device(name, profiles_dir=None) -> dict
    run_on_device(model_path, inputs, device, ...) -> list[np.ndarray]   (validate --device)
    bench_on_device(model_path, device, ...) -> dict                     (runner JSON + complete)

The host copies `runner.py`, the model and the inputs into a private work folder on the
device, runs the runner with the device's own Python, and reads its JSON lines back.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from toolkit.devices.profiles import Profile, get_profile, list_profiles
from toolkit.errors import BadInput, DeviceError, Unsupported

__all__ = ["Profile", "get_profile", "list_profiles", "check_device", "run_on_device", "bench_on_device",
           "bench_lm_on_device", "open_transport"]

DEFAULT_TIMEOUT_S = 600


def open_transport(profile: Profile, *, benchmark_binary: str | None = None):
    """The transport a profile names (not yet connected: use it as a context manager)."""
    transport = profile.transport
    kind = transport["type"]
    if kind == "local":
        from toolkit.devices.local import LocalTransport

        return LocalTransport(transport)
    if kind == "ssh":
        from toolkit.devices.ssh import SshTransport

        return SshTransport(transport, profile.name)
    if kind == "adb":
        from toolkit.devices.adb import AdbTransport

        return AdbTransport(transport, profile.name, benchmark_binary=benchmark_binary)
    note = transport.get("note") or "no transport Edgeward can drive"
    raise DeviceError(f"device {profile.name} cannot be reached from Edgeward ({note}); "
                      f"use `edgeward bench MODEL --device {profile.name} --estimate`")


def _model_file(model_path) -> Path:
    from toolkit.artifacts import resolve_model

    path = resolve_model(model_path)
    if path.suffix.lower() not in (".onnx", ".tflite"):
        raise Unsupported(f"{path.name}: devices run .onnx or .tflite models (found {path.suffix or 'no suffix'})")
    return path


class RunnerSession:
    """Collects the runner's JSON lines as they arrive (so a lost connection keeps the timings)."""

    def __init__(self):
        self.loaded: dict | None = None
        self.timings: list[float] = []
        self.result: dict | None = None
        self.error: dict | None = None

    def on_line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return  # a runtime's own chatter on stdout
        if not isinstance(event, dict):
            return
        kind = event.pop("event", None)
        if kind == "loaded":
            self.loaded = event
        elif kind == "timings":
            self.timings += [float(t) for t in event.get("ms", [])]
        elif kind == "result":
            self.result = event
        elif kind == "error":
            self.error = event

    def raise_error(self, device: str) -> None:
        if not self.error:
            return
        kind, message = self.error.get("kind"), self.error.get("message", "the runner failed")
        if kind == "runtime_missing":
            raise DeviceError(f"runtime missing on {device}: {message}")
        if kind == "bad_input":
            raise BadInput(f"{device}: {message}")
        if kind == "load_failed":
            raise Unsupported(f"{device}: the device's runtime cannot load the model: {message}")
        raise DeviceError(f"{device}: the runner failed: {message}")


def _run_runner(profile: Profile, model: Path, argv_tail: list[str], *, inputs: dict | None, pull: str | None,
                timeout: float, scratch: Path):
    """Push runner + model (+ inputs), run, optionally pull a file back. Returns (session, pulled, error)."""
    session = RunnerSession()
    pulled, failure = None, None
    with open_transport(profile) as transport:
        from toolkit.devices.transport import runner_path

        transport.push(runner_path(), "runner.py")
        model_name = "model" + model.suffix.lower()
        transport.push(model, model_name)
        argv = ["runner.py", argv_tail[0], "--model", model_name, *argv_tail[1:]]
        if inputs is not None:
            import numpy as np

            local_inputs = scratch / "inputs.npz"
            np.savez(local_inputs, **{name: np.asarray(array) for name, array in inputs.items()})
            transport.push(local_inputs, "inputs.npz")
            argv += ["--inputs", "inputs.npz"]
        if pull:
            argv += ["--outputs", pull]
        try:
            completed = transport.run(argv, timeout=timeout, on_line=session.on_line)
        except DeviceError as error:
            failure = error
        else:
            session.raise_error(profile.name)
            if session.result is None:
                failure = DeviceError(f"{profile.name}: the runner stopped without a result "
                                      f"({_exit_text(completed.returncode)}): "
                                      f"{completed.stderr.strip()[-300:] or 'no error output'}")
            elif pull:
                pulled = transport.pull(pull, scratch / pull)
    return session, pulled, failure


def bench_on_device(model_path, device: str, *, runs: int = 50, warmup: int = 5, threads: int | None = None,
                    inputs: dict | None = None, profiles_dir=None, timeout: float = DEFAULT_TIMEOUT_S,
                    benchmark_binary: str | None = None) -> dict:
    """Time a model on a device. Returns the runner's JSON plus `complete` (False when the
    connection was lost mid-run: the timings that arrived are summarized and `error` says why)."""
    if runs < 1 or warmup < 0:
        raise BadInput("--runs must be at least 1 and --warmup at least 0")
    if threads is not None and threads < 1:
        raise BadInput("--threads must be at least 1")
    profile = get_profile(device, profiles_dir)
    model = _model_file(model_path)
    if profile.transport["type"] == "adb":
        from toolkit.devices.adb import bench_adb

        if inputs is not None:
            raise Unsupported(f"{device}: the adb transport times with LiteRT's benchmark_model on its own "
                              f"random inputs; it cannot take --data")

        return bench_adb(profile, model, runs=runs, warmup=warmup, threads=threads, timeout=timeout,
                         benchmark_binary=benchmark_binary)
    tail = ["bench", "--runs", str(runs), "--warmup", str(warmup)]
    if threads:
        tail += ["--threads", str(threads)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeward-bench-") as scratch:
        session, _, failure = _run_runner(profile, model, tail, inputs=inputs, pull=None, timeout=timeout,
                                          scratch=Path(scratch))
    transport = {"type": profile.transport["type"], "wall_s": round(time.monotonic() - started, 3)}
    if failure is None:
        return {**session.result, "device": profile.name, "transport": transport, "complete": True}
    if not session.timings:
        raise failure
    from toolkit.devices.runner import summarize

    partial = dict(session.loaded or {})
    partial.update(summarize(session.timings), mode="bench", runs=len(session.timings), runs_requested=runs,
                   warmup=warmup, device=profile.name, transport=transport, complete=False, error=str(failure))
    return partial


def bench_lm_on_device(model_files: list[Path], device: str, *, request: dict, profiles_dir=None,
                       timeout: float = DEFAULT_TIMEOUT_S) -> dict:
    """Time a language model's decode on a device: `model_files` (model.onnx first, then its external
    data files, pushed under their own names so the graph finds them) and runner.py go to the device,
    whose `runner.py lm` returns the record of toolkit.lm.bench's local measurement."""
    profile = get_profile(device, profiles_dir)
    if profile.transport["type"] == "adb" and not profile.transport.get("python"):
        raise Unsupported(f"{device}: the adb transport runs LiteRT's benchmark_model, which cannot decode a "
                          f"language model; set 'python:' in the profile's transport, or bench on an ssh device")
    argv = ["runner.py", "lm", "--model", Path(model_files[0]).name]
    for key in ("prompt_tokens", "new_tokens", "runs", "warmup", "threads", "context", "vocab_size", "head_dim"):
        if request.get(key) is not None:
            argv += ["--" + key.replace("_", "-"), str(int(request[key]))]
    session, transport = run_runner(profile, device, argv, [Path(path) for path in model_files], timeout)
    return {**session.result, "transport": transport}


def run_runner(profile, device: str, argv: list[str], files: list[Path], timeout: float):
    """runner.py and `files` (each under its own name) pushed to the device, `argv` run there: the
    runner's session (its result set) and the transport's record; the runner's own errors raised as
    Unsupported (exit 3) or DeviceError."""
    from toolkit.devices.transport import runner_path

    session = RunnerSession()
    started = time.monotonic()
    with open_transport(profile) as transport:
        transport.push(runner_path(), "runner.py")
        for path in files:
            transport.push(path, path.name)
        completed = transport.run(argv, timeout=timeout, on_line=session.on_line)
    if session.error and session.error.get("kind") == "unsupported":
        raise Unsupported(f"{device}: {session.error.get('message')}")
    session.raise_error(profile.name)
    if session.result is None:
        raise DeviceError(f"{profile.name}: the runner stopped without a result ({_exit_text(completed.returncode)}): "
                          f"{completed.stderr.strip()[-300:] or 'no error output'}")
    return session, {"type": profile.transport["type"], "wall_s": round(time.monotonic() - started, 3)}


def run_on_device(model_path, inputs: dict, device: str, *, runs: int = 1, warmup: int = 0,
                  threads: int | None = None, profiles_dir=None, timeout: float = DEFAULT_TIMEOUT_S,
                  facts: dict | None = None, all_tensors: bool = False) -> list:
    """Run `inputs` (arrays named after the model's inputs, each with its examples on the axis
    the model's signature gives: axis 0, axis 1 for a state [2, batch, 128]; 0-d inputs are
    passed whole with every batch) through the model on the device and bring the outputs
    back, in order, joined along their example axis. `runs`/`warmup` are accepted for
    symmetry with bench; predictions are computed once. `facts`, when given, receives the
    runner's result line (runtime, delegate, `machine` as the device reports it). `all_tensors`
    (TFLite): every op's output follows the model's outputs, named in `facts["tensors"]`."""
    import numpy as np

    del runs, warmup
    if not inputs:
        raise BadInput("no inputs to run on the device")
    profile = get_profile(device, profiles_dir)
    if profile.transport["type"] == "adb" and not profile.transport.get("python"):
        raise Unsupported(f"{device}: the adb transport runs LiteRT's benchmark_model, which times a model but "
                          f"does not return its outputs; set 'python:' in the profile's transport to a Python "
                          f"on the phone (e.g. Termux's, with numpy and a runtime), or validate on an ssh device")
    model = _model_file(model_path)
    tail = ["predict"] + (["--threads", str(threads)] if threads else []) + (["--all-tensors"] if all_tensors else [])
    with tempfile.TemporaryDirectory(prefix="edgeward-run-") as scratch:
        session, pulled, failure = _run_runner(profile, model, tail, inputs=inputs, pull="outputs.npz",
                                               timeout=timeout, scratch=Path(scratch))
        if failure is not None:
            raise failure
        if facts is not None:
            facts.update(session.result)
        with np.load(pulled, allow_pickle=False) as archive:
            count = int(session.result.get("outputs", len(archive.files)))
            return [archive[f"output_{i}"] for i in range(count)]


def check_device(name: str, profiles_dir=None) -> dict:
    """Connect, and report what the device has and what it lacks to run models."""
    profile = get_profile(name, profiles_dir)
    if profile.transport["type"] == "adb":
        from toolkit.devices.adb import check_adb

        return check_adb(profile)
    started = time.monotonic()
    session = RunnerSession()
    with open_transport(profile) as transport:
        from toolkit.devices.transport import runner_path

        transport.push(runner_path(), "runner.py")
        completed = transport.run(["runner.py", "probe", "--workdir", transport.workdir], timeout=120,
                                  on_line=session.on_line)
        probe = transport.probe()
    if session.result is None:
        raise DeviceError(f"{name}: the probe gave no answer (exit {completed.returncode}): "
                          f"{completed.stderr.strip()[-300:]}")
    facts = session.result
    facts.pop("mode", None)
    runtimes = facts.get("runtimes", {})
    tflite = next((n for n in ("ai_edge_litert", "tflite_runtime", "tensorflow") if runtimes.get(n)), None)
    missing = []
    if not runtimes.get("numpy"):
        missing.append("numpy (pip install numpy)")
    if not runtimes.get("onnxruntime"):
        missing.append("onnxruntime for .onnx models (pip install onnxruntime)")
    if not tflite:
        missing.append("a TFLite runtime for .tflite models (pip install ai-edge-litert, or tflite-runtime)")
    can_run = {"onnx": bool(runtimes.get("numpy") and runtimes.get("onnxruntime")),
               "tflite": bool(runtimes.get("numpy") and tflite)}
    return {"device": name, "kind": profile.kind, **probe, "connect_s": round(time.monotonic() - started, 3),
            **facts, "can_run": can_run, "missing": missing, "ok": any(can_run.values())}


def _exit_text(code: int) -> str:
    """`exit 1`, or the signal that killed the runner (a negative code, or 128+N from a shell)."""
    import signal

    number = -code if code < 0 else (code - 128 if 128 < code < 160 else 0)
    if number:
        try:
            return f"killed by signal {number} ({signal.Signals(number).name})"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit {code}"
