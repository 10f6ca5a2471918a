"""The supervised child: native crashes, time-outs, memory overruns and Ctrl-C become one
line and an exit code; the CLI process itself never dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, edgeward_process

from toolkit.errors import BadInput
from toolkit.safety import isolation
from toolkit.safety.isolation import Limits, call_isolated


def hog_memory(megabytes: int) -> int:
    """Touch memory 20 MB at a time (slowly enough for the watchdog to see it grow)."""
    blocks = []
    for _ in range(megabytes // 20):
        blocks.append(bytearray(os.urandom(1)) * (20 * 2**20))
        time.sleep(0.02)
    return len(blocks)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("crash", ["SIGSEGV", "NULL", "SIGABRT"])
def test_native_crash_in_child_is_one_line_and_exit_2(crash):
    result = edgeward_process("export", "whatever.pt", "--to", "onnx",
                              env={**os.environ, "EDGEWARD_TEST_CRASH": crash}, timeout=60)
    assert result.exit_code == 2
    expected = "signal 6 (SIGABRT)" if crash == "SIGABRT" else "signal 11 (SIGSEGV)"
    assert error_lines(result.stderr) == [f"error: the model crashed the runtime: {expected}"]
    assert "Traceback" not in result.stderr


def test_ctypes_null_read_in_called_function_becomes_bad_input():
    with pytest.raises(BadInput, match=r"crashed the runtime: signal 11 \(SIGSEGV\)"):
        call_isolated("ctypes:string_at", 0, quiet=True)
    # The parent (this pytest process) is alive and can still call the child normally.
    assert call_isolated("os.path:join", "a", "b") == os.path.join("a", "b")


def test_typed_errors_cross_the_process_boundary(tmp_path):
    from toolkit.errors import BadInput as Bad

    with pytest.raises(Bad, match="no such file"):
        call_isolated("toolkit.safety.files:check_exists", str(tmp_path / "missing.onnx"))


def test_time_limit_stops_a_hang_with_exit_2_and_4_for_device_commands():
    env = {**os.environ, "EDGEWARD_TEST_CRASH": "HANG", "EDGEWARD_TIME_LIMIT": "1"}
    start = time.monotonic()
    result = edgeward_process("quantize", "m.onnx", "--mode", "dynamic-int8", env=env, timeout=60)
    assert time.monotonic() - start < 20
    assert result.exit_code == 2
    assert "error: edgeward quantize timed out after 1 s" in result.stderr
    assert "Traceback" not in result.stderr
    result = edgeward_process("bench", "m.onnx", "--device", "board", env=env, timeout=60)
    assert result.exit_code == 4
    assert "error: edgeward bench timed out after 1 s" in result.stderr


def test_memory_watchdog_stops_a_growing_child(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    limits = Limits(time_s=60, memory_mb=300)
    with pytest.raises(BadInput, match="more than 300 MB of memory"):
        call_isolated("test_reliability_isolation:hog_memory", 2000, limits=limits, quiet=True)


def test_one_huge_allocation_is_a_memory_error_not_the_oom_killer():
    # RLIMIT_DATA (twice the limit) refuses a 50 GB request outright.
    limits = Limits(time_s=60, memory_mb=500)
    with pytest.raises(BadInput, match="out of memory"):
        call_isolated("builtins:bytearray", 50 * 2**30, limits=limits, quiet=True)


def test_ctrl_c_is_forwarded_and_nothing_is_left_running():
    env = {**os.environ, "EDGEWARD_TEST_CRASH": "HANG"}
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "export", "x.pt", "--to", "onnx"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)  # let the child start
    children = _children_of(proc.pid)
    assert children, "the model work should run in a child process"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)


def test_killing_the_cli_takes_the_child_with_it():
    env = {**os.environ, "EDGEWARD_TEST_CRASH": "HANG"}
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "validate", "m.onnx"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    children = _children_of(proc.pid)
    assert children
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and not _is_zombie(p)
                                              for p in children):
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{p}") and not _is_zombie(p) for p in children)


def test_help_version_and_light_commands_stay_in_process():
    assert not isolation.should_isolate(["export", "--help"])
    assert not isolation.should_isolate(["--version"])
    assert not isolation.should_isolate(["devices", "list"])
    assert not isolation.should_isolate(["breakeven", "s.yaml"])
    assert isolation.should_isolate(["--json", "export", "m.pt", "--to", "onnx"])
    assert isolation.should_isolate(["-v", "demo"])
    assert isolation.should_isolate(["export", "--", "--help"])


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("EDGEWARD_TIME_LIMIT", "12.5")
    monkeypatch.setenv("EDGEWARD_MEMORY_LIMIT_MB", "0")
    limits = Limits.from_env()
    assert limits.time_s == 12.5 and limits.memory_mb is None
    monkeypatch.setenv("EDGEWARD_MEMORY_LIMIT_MB", "1500")
    assert Limits.from_env().memory_mb == 1500
    monkeypatch.delenv("EDGEWARD_MEMORY_LIMIT_MB")
    assert Limits.from_env().memory_mb >= 2048


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


# ---------------------------------------------------------------- a real crashing model


def crashing_tflite(source: Path, target: Path) -> Path:
    """The fuzz suite's finding, rebuilt: FULLY_CONNECTED whose weights input is -1.

    ai-edge-litert 2.3.0's interpreter segfaults on it (it passes the flatbuffer verifier).
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(source.read_bytes(), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) == "FULLY_CONNECTED":
            op.inputs = [int(op.inputs[0]), -1, *map(int, op.inputs[2:])]
            break
    else:
        raise AssertionError("no FULLY_CONNECTED op in the seed")
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()))
    return target


def raw_interpreter(path: str) -> None:
    """Load and run with the interpreter directly, skipping Edgeward's checks."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], np.float32))
    interpreter.invoke()


def test_a_real_crashing_model_is_contained_and_then_refused_up_front(tmp_path, monkeypatch, digits_cnn_tflite):
    from toolkit.safety.tflite import check_tflite_file

    model = crashing_tflite(digits_cnn_tflite, tmp_path / "crash.tflite")
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    # Without Edgeward's checks the runtime itself dies; the child contains it.
    with pytest.raises(BadInput, match=r"crashed the runtime: signal 11 \(SIGSEGV\)"):
        call_isolated("test_reliability_isolation:raw_interpreter", str(model), quiet=True)
    # With them the shape is refused before the interpreter sees the file, in one line.
    with pytest.raises(BadInput, match="FULLY_CONNECTED.*missing input tensor"):
        check_tflite_file(model)
    result = edgeward_process("validate", model, "--reference", digits_cnn_tflite, "--data", "builtin:digits:test",
                              timeout=300)
    assert result.exit_code == 2, result.stderr
    assert error_lines(result.stderr)[-1].startswith("error: ") and "Traceback" not in result.stderr
