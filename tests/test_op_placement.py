"""Where each op ran: XNNPACK's nodes and the builtin-kernel fallbacks (LiteRT), the execution
provider of every node (onnxruntime), and the --max-fallback gate on bench and validate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tiny_models import write_cumsum_tflite

from tests.testbed import PROFILES, boards_started
from toolkit.devices.transport import runner_path


@pytest.fixture(scope="module")
def cumsum_tflite(tmp_path_factory):
    return write_cumsum_tflite(tmp_path_factory.mktemp("placement") / "cumsum.tflite")


def run_runner(model, *extra) -> dict:
    """runner.py in its own interpreter, as a device runs it; its result line."""
    completed = subprocess.run([sys.executable, str(runner_path()), "bench", "--model", str(model), "--runs", "5",
                                *extra], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return next(line for line in lines if line.get("event") == "result")


def test_every_digits_cnn_op_runs_in_xnnpack(digits_cnn_tflite):
    placement = run_runner(digits_cnn_tflite)["placement"]
    assert placement["accelerator"] == "XNNPACK delegate" and placement["partitions"] == 1
    assert placement["nodes"] == 8 and placement["delegated_nodes"] == 8
    assert placement["fallback_nodes"] == [] and placement["fallback_pct"] == 0.0


def test_cumsum_falls_back_to_the_builtin_kernels(cumsum_tflite):
    placement = run_runner(cumsum_tflite)["placement"]
    assert placement["nodes"] == 2 and placement["delegated_nodes"] == 1
    assert placement["fallback_ops"] == ["CUMSUM"] and placement["fallback_nodes"] == ["CUMSUM#1"]
    assert placement["fallback_pct"] == 50.0 and placement["basis"].startswith("nodes")


def test_onnxruntime_names_the_provider_of_every_node(digits_cnn_onnx):
    import onnx

    result = run_runner(digits_cnn_onnx)
    placement = result["placement"]
    graph_nodes = len(onnx.load(str(digits_cnn_onnx)).graph.node)
    assert placement["accelerator"] == "CPUExecutionProvider" and placement["providers"] == ["CPUExecutionProvider"]
    assert 0 < placement["nodes"] <= graph_nodes  # onnxruntime fuses some nodes before it runs them
    assert placement["time_us_by_provider"]["CPUExecutionProvider"] > 0
    assert placement["fallback_pct"] == 0.0 and placement["basis"].startswith("time")
    assert result["input_shapes"] == {"x": [1, 1, 8, 8]}  # the dynamic batch timed as one request


def test_bench_gate_passes_all_xnnpack_and_fails_on_the_fallback(run_cli, tmp_path, digits_cnn_tflite,
                                                                   cumsum_tflite):
    out = tmp_path / "bench.json"
    passed = run_cli("bench", digits_cnn_tflite, "--runs", 20, "--max-fallback", 0, "--no-calibrate", "-o", out)
    assert passed.exit_code == 0, passed.stderr
    assert "8/8 nodes on XNNPACK delegate; fallback 0.0% of nodes" in passed.stdout
    assert json.loads(out.read_text())["placement"]["fallback_pct"] == 0.0

    failed = run_cli("bench", cumsum_tflite, "--runs", 20, "--max-fallback", 10, "--no-calibrate")
    assert failed.exit_code == 1
    assert "1/2 nodes on XNNPACK delegate; fallback 50.0% of nodes: CUMSUM#1" in failed.stdout
    assert "50.0% of the nodes ran outside XNNPACK delegate on localhost (--max-fallback 10%): fell back: CUMSUM" \
        in failed.stderr

    lenient = run_cli("bench", cumsum_tflite, "--runs", 20, "--max-fallback", 60, "--no-calibrate")
    assert lenient.exit_code == 0, lenient.stderr


def test_validate_on_a_device_reports_placement_and_gates(run_cli, digits_cnn_tflite):
    result = run_cli("--json", "validate", digits_cnn_tflite, "--reference", "builtin:digits-cnn", "--data",
                     "builtin:digits:test", "--device", "localhost", "--max-fallback", 0, "--no-record")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["placement"]["delegated_nodes"] == report["placement"]["nodes"] == 8

    alone = run_cli("validate", digits_cnn_tflite, "--reference", "builtin:digits-cnn", "--data",
                    "builtin:digits:test", "--max-fallback", 5, "--no-record")
    assert alone.exit_code == 2 and "--max-fallback needs --device" in alone.stderr


@pytest.mark.ssh
@pytest.mark.skipif(not boards_started("ssh-testbed"), reason="the ssh test bed is not running (scripts/ssh-testbed start)")
def test_placement_and_gate_over_ssh(run_cli, cumsum_tflite):
    """The placement is measured by runner.py on the device, so it comes back over ssh too."""
    result = run_cli("bench", cumsum_tflite, "--device", "ssh-testbed", "--profiles", PROFILES, "--runs", 10,
                     "--max-fallback", 10, "--no-calibrate")
    assert result.exit_code == 1, result.stderr
    assert "fell back: CUMSUM" in result.stderr and "on ssh-testbed" in result.stderr
