"""The adb flow end to end, against tests/fake_adb/adb (a test-only stand-in, NOT adb).

The stand-in is put first on PATH and serves one "phone", `fake-phone`: a folder on this
host whose shell runs commands with the emulated ARM64 board's aarch64 Python (Cortex-A76
under QEMU) when `scripts/arm64-testbed start` ran, else with this host's Python, so the
flow runs in CI either way. LiteRT's `benchmark_model` on it is a stand-in too, on
ai-edge-litert (tests/fake_adb/benchmark_model.py), printing the real tool's format.
Checked: devices check, push, bench (benchmark_model), validate and drift (the runner
with the phone's Python, outputs pulled back), and that every work folder is removed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.testbed import STATE, board_python

FAKE_ADB = Path(__file__).with_name("fake_adb")
BOARD_PROFILE = STATE / "profiles" / "arm64-cortex-a76.yaml"
EXAMPLES = 32


BOARD_PYTHON = board_python()


@pytest.fixture
def phone(tmp_path, monkeypatch) -> dict:
    """One attached fake phone: PATH, its device root and its profile folder."""
    python = BOARD_PYTHON or sys.executable
    root = tmp_path / "adb-root"
    monkeypatch.setenv("PATH", f"{FAKE_ADB}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_DEVICES", f"fake-phone={python}")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    emulated = "emulated: true\ncpu_family: cortex-a76\n" if BOARD_PYTHON else ""
    (profiles / "fake-phone.yaml").write_text(
        "extends: pixel-8\ndescription: the test adb stand-in (tests/fake_adb)\n" + emulated
        + "transport: {type: adb, serial: fake-phone, python: python3, "
          "benchmark_binary: /data/local/tmp/benchmark_model}\n")
    monkeypatch.setenv("EDGEWARD_PROFILES", str(profiles))
    return {"root": root, "tmp": root / "fake-phone" / "data" / "local" / "tmp", "python": python,
            "machine": "aarch64" if BOARD_PYTHON else os.uname().machine}


def _work_folders(phone: dict) -> list[str]:
    return sorted(p.name for p in phone["tmp"].glob("edgeward-*")) if phone["tmp"].is_dir() else []


def test_devices_check_over_adb(run_cli, phone):
    result = run_cli("--json", "devices", "check", "fake-phone")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["ok"] and report["transport"] == "adb" and report["missing"] == []
    assert "Edgeward fake adb device" in report["facts"]  # getprop; `uname -m` is the host shell's, not the board's
    assert _work_folders(phone) == []  # the work folder it made was removed


def test_bench_over_adb_runs_benchmark_model(run_cli, phone, digits_cnn_tflite):
    result = run_cli("--json", "bench", digits_cnn_tflite, "--device", "fake-phone", "--runs", "5", "--warmup", "1")
    assert result.exit_code == 0, result.stderr
    record = result.json()
    assert record["complete"] and record["runtime"]["name"] == "benchmark_model" and record["runs"] == 5
    assert record["latency_ms"]["p50"] > 0 and record["load_ms"] > 0 and record["model_size_mb"] > 0
    assert record["peak_memory_mb"] > 0 and record["transport"]["type"] == "adb"
    assert bool(record.get("emulated")) == bool(BOARD_PYTHON)  # timed under QEMU: labelled, never a device's
    assert _work_folders(phone) == []


def test_validate_and_drift_over_adb(run_cli, phone, digits_cnn_tflite, tmp_path):
    from toolkit.data import load_data
    from toolkit.devices import run_on_device

    dataset = load_data("builtin:digits:test").take(EXAMPLES)
    data = tmp_path / "digits.npz"
    np.savez(data, labels=dataset.labels, **dataset.inputs)
    result = run_cli("--json", "validate", digits_cnn_tflite, "--reference", "builtin:digits-cnn", "--data", data,
                     "--device", "fake-phone", "--no-record")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["device"] == "fake-phone" and report["samples"] == EXAMPLES and report["passed"]
    assert report["outputs"][0]["agreement"] == 1.0

    # the phone's outputs, pulled back over adb, against this host's through the same runner
    facts: dict = {}
    [on_phone] = run_on_device(digits_cnn_tflite, dict(dataset.inputs), "fake-phone", facts=facts)
    [on_host] = run_on_device(digits_cnn_tflite, dict(dataset.inputs), "localhost")
    assert facts["machine"] == phone["machine"] and on_phone.shape == on_host.shape == (EXAMPLES, 10)
    assert float(np.abs(on_phone - on_host).max()) < 1e-4

    drift = run_cli("--json", "drift", digits_cnn_tflite, "--data", data, "--device", "fake-phone")
    assert drift.exit_code == 0, drift.stderr
    [device] = drift.json()["devices"]
    assert device["machine"] == phone["machine"] and device["outputs"][0]["within_tolerance"]
    assert device["per_layer"]["nodes_compared"] == 8  # every TFLite op's output, pulled back over adb
    assert _work_folders(phone) == []


def test_adb_faults_are_one_line(run_cli, phone, monkeypatch, digits_cnn_tflite):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "another-phone=/bin/false")
    result = run_cli("bench", digits_cnn_tflite, "--device", "fake-phone", "--runs", "2")
    assert result.exit_code == 4, result.stderr
    assert "not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1
