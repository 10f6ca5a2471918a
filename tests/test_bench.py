"""bench on the local host (the runner in a separate process) and the estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.devices.transport import runner_path


@pytest.mark.parametrize("fixture", ["digits_cnn_onnx", "digits_cnn_tflite"])
def test_bench_localhost(run_cli, request, tmp_path, fixture):
    model = request.getfixturevalue(fixture)
    out = tmp_path / "bench.json"
    result = run_cli("--json", "bench", model, "--runs", 200, "--warmup", 10, "--threads", 1, "-o", out)
    assert result.exit_code == 0, result.stderr
    record = json.loads(out.read_text())
    assert record["mode"] == "measured" and record["complete"] is True and record["estimate"] is False
    assert record["runs"] == 200 and record["warmup"] == 10 and record["threads"] == 1
    assert record["device"]["name"] == "localhost" and record["transport"]["type"] == "local"
    latency = record["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 50
    assert latency["std"] >= 0 and isinstance(record["drift"], bool)
    assert record["load_ms"] > 0 and record["first_inference_ms"] > 0 and record["peak_rss_mb"] > 10
    assert record["model"]["size_bytes"] == Path(model).stat().st_size and len(record["model"]["sha256"]) == 64
    expected = {"onnxruntime": "CPUExecutionProvider", "ai_edge_litert": "XNNPACK delegate"}
    assert record["delegate"] == expected[record["runtime"]["name"]]


def test_runner_alone_predicts_like_the_host(tmp_path, digits_cnn_tflite, digits_test):
    """runner.py as a device runs it: a separate interpreter, only numpy + the runtime."""
    import numpy as np

    from toolkit.runtime import open_model, run_batched

    np.savez(tmp_path / "in.npz", x=digits_test.inputs["x"][:40])
    completed = subprocess.run([sys.executable, str(runner_path()), "predict", "--model", str(digits_cnn_tflite),
                                "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz")],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["event"] == "result" and result["examples"] == 40
    outputs = np.load(tmp_path / "out.npz")["output_0"]
    local = run_batched(open_model(digits_cnn_tflite), {"x": digits_test.inputs["x"][:40]})[0]
    np.testing.assert_allclose(outputs, local, rtol=1e-6, atol=1e-6)


def test_runner_drift_flag():
    from toolkit.devices.runner import summarize

    steady = summarize([1.0] * 30)
    assert steady["drift"] is False and steady["latency_ms"]["p50"] == 1.0
    slowing = summarize([1.0] * 10 + [1.05] * 10 + [1.2] * 10)
    assert slowing["drift"] is True and slowing["drift_ratio"] == pytest.approx(1.2)


def test_runtime_missing_locally(run_cli, tmp_path, digits_cnn_onnx):
    bare = "/usr/bin/python3"
    if not Path(bare).exists():
        pytest.skip("no system python3 without onnxruntime")
    (tmp_path / "bare.yaml").write_text(f"extends: localhost\ntransport: {{type: local, python: {bare}}}\n")
    result = run_cli("bench", digits_cnn_onnx, "--device", "bare", "--profiles", tmp_path)
    assert result.exit_code == 4
    assert "runtime missing on bare" in result.stderr and "pip install numpy onnxruntime" in result.stderr


def test_estimate_counts_the_digits_cnn_exactly(digits_cnn_onnx, digits_cnn_tflite):
    from toolkit.bench.estimate import count_graph

    # Conv 1->16 3x3 on 8x8, Conv 16->32 3x3 on 8x8, Linear 512->64, Linear 64->10
    conv_macs = 16 * 64 * 9 + 32 * 64 * 16 * 9
    linear_macs = 512 * 64 + 64 * 10
    params = (16 * 9 + 16) + (32 * 16 * 9 + 32) + (512 * 64 + 64) + (64 * 10 + 10)
    onnx = count_graph(Path(digits_cnn_onnx))
    assert onnx.macs == conv_macs + linear_macs
    assert onnx.by_op_type()["Conv"]["macs"] == conv_macs
    assert onnx.parameters == params + 2  # + the Reshape's shape constant
    assert onnx.precision == "fp32" and onnx.activation_peak_bytes > 0
    tflite = count_graph(Path(digits_cnn_tflite))
    assert tflite.macs == conv_macs + linear_macs  # the first conv is a depthwise conv in TFLite
    assert abs(tflite.flops - onnx.flops) / onnx.flops < 0.01
    # the LiteRT converter's own count for this model: "0.680 M ops, equivalently 0.340 M MACs"
    assert tflite.flops == pytest.approx(0.680e6, rel=0.01)


def test_bench_estimate_says_estimate_and_the_bound(run_cli, digits_cnn_onnx):
    result = run_cli("--json", "bench", digits_cnn_onnx, "--device", "raspberry-pi-5", "--estimate")
    assert result.exit_code == 0, result.stderr
    record = result.json()
    assert record["estimate"] is True and record["mode"] == "estimate" and "roofline" in record["why"]
    assert record["fit"]["fits"] is True and record["latency"]["bound"] in ("compute", "memory")
    latency = record["latency"]
    assert latency["latency_ms"] >= max(latency["compute_ms"], latency["memory_ms"]) - 1e-9
    assert record["flops"] / (153.6e9) * 1000 == pytest.approx(latency["compute_ms"], rel=1e-3)
    text = run_cli("bench", digits_cnn_onnx, "--device", "esp32-s3", "--estimate")
    assert "ESTIMATE" in text.stdout and "bound" in text.stdout


def test_estimate_model_that_does_not_fit_is_exit_1(run_cli, tmp_path, digits_cnn_tflite):
    profile = (Path(__file__).parent.parent / "device_profiles" / "arduino-nano-33-ble-sense.yaml").read_text()
    profile = profile.replace("ram_mb: {value: 0.25,", "ram_mb: {value: 0.05,")
    (tmp_path / "tiny-mcu.yaml").write_text(profile)
    result = run_cli("bench", digits_cnn_tflite, "--device", "tiny-mcu", "--estimate", "--profiles", tmp_path)
    assert result.exit_code == 1 and "does not fit" in result.stderr


def test_bench_bad_input(run_cli, tmp_path, digits_cnn_onnx):
    assert run_cli("bench", tmp_path / "missing.onnx").exit_code == 2
    assert run_cli("bench", digits_cnn_onnx, "--runs", 0).exit_code == 2
    result = run_cli("bench", digits_cnn_onnx, "--device", "localhostt")
    assert result.exit_code == 2 and "localhost" in result.stderr
