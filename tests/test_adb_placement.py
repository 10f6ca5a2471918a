"""Where each op ran on an adb device: benchmark_model's interpreter state
(`--print_postinvoke_state`), parsed into the same placement record the runner gives over ssh,
and the --max-fallback gate on bench and validate.

Runs against tests/fake_adb/adb (a test-only stand-in, NOT adb; see tests/test_adb_flow.py):
its benchmark_model prints LiteRT's own execution plan in tflite::PrintInterpreterState's
format, on the emulated ARM64 board's Python when `scripts/arm64-testbed start` ran, else on
this host's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from tiny_models import write_cumsum_tflite

from tests.testbed import board_python
from toolkit.devices.adb import parse_benchmark_model

FAKE_ADB = Path(__file__).with_name("fake_adb")
DATA = Path(__file__).with_name("data")


@pytest.fixture
def phone(tmp_path, monkeypatch) -> Path:
    """One fake phone on PATH; returns its /data/local/tmp."""
    root = tmp_path / "adb-root"
    monkeypatch.setenv("PATH", f"{FAKE_ADB}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_DEVICES", f"fake-phone={board_python() or sys.executable}")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "fake-phone.yaml").write_text(
        "extends: pixel-8\ndescription: the test adb stand-in (tests/fake_adb)\n"
        "transport: {type: adb, serial: fake-phone, python: python3, "
        "benchmark_binary: /data/local/tmp/benchmark_model}\n")
    monkeypatch.setenv("EDGEWARD_PROFILES", str(profiles))
    return root / "fake-phone" / "data" / "local" / "tmp"


@pytest.fixture(scope="module")
def cumsum_tflite(tmp_path_factory):
    return write_cumsum_tflite(tmp_path_factory.mktemp("adb-placement") / "cumsum.tflite")


def test_delegate_log_alone_gives_counts_without_names():
    """A real phone's GPU run (recorded): "Replacing 58 out of 66 node(s)", no interpreter state."""
    placement = parse_benchmark_model((DATA / "benchmark_model_gpu_fallback.txt").read_text())["placement"]
    assert placement["accelerator"] == "GPU delegate" and placement["nodes"] == 66
    assert placement["delegated_nodes"] == 58 and placement["fallback_pct"] == pytest.approx(12.121)
    assert placement["fallback_nodes"] == [] and placement["basis"].startswith("nodes")


def test_bench_over_adb_reports_every_digits_op_in_xnnpack(run_cli, phone, digits_cnn_tflite):
    result = run_cli("--json", "bench", digits_cnn_tflite, "--device", "fake-phone", "--runs", "3", "--warmup", "1",
                     "--max-fallback", "0", "--no-calibrate")
    assert result.exit_code == 0, result.stderr
    placement = result.json()["placement"]
    assert placement["accelerator"] == "XNNPACK delegate" and placement["partitions"] == 1
    assert placement["nodes"] == placement["delegated_nodes"] == 8
    assert placement["fallback_nodes"] == [] and placement["fallback_pct"] == 0.0
    assert "8/8 nodes on XNNPACK delegate; fallback 0.0% of nodes" in result.stderr
    assert list(phone.glob("edgeward-*")) == []


def test_bench_over_adb_gate_fails_on_the_cumsum_fallback(run_cli, phone, cumsum_tflite):
    failed = run_cli("bench", cumsum_tflite, "--device", "fake-phone", "--runs", "3", "--max-fallback", "10",
                     "--no-calibrate")
    assert failed.exit_code == 1, failed.stderr
    assert "1/2 nodes on XNNPACK delegate; fallback 50.0% of nodes: CUMSUM#1" in failed.stdout
    assert "50.0% of the nodes ran outside XNNPACK delegate on fake-phone (--max-fallback 10%): fell back: CUMSUM" \
        in failed.stderr

    lenient = run_cli("bench", cumsum_tflite, "--device", "fake-phone", "--runs", "3", "--max-fallback", "60",
                      "--no-calibrate")
    assert lenient.exit_code == 0, lenient.stderr


def test_validate_over_adb_reports_placement_and_gates(run_cli, phone, digits_cnn_tflite, cumsum_tflite):
    result = run_cli("--json", "validate", digits_cnn_tflite, "--reference", "builtin:digits-cnn", "--data",
                     "builtin:digits:test", "--device", "fake-phone", "--max-fallback", "0", "--no-record")
    assert result.exit_code == 0, result.stderr
    placement = result.json()["placement"]
    assert placement["delegated_nodes"] == placement["nodes"] == 8 and placement["runtime"] == "benchmark_model"
    assert list(phone.glob("edgeward-*")) == []
