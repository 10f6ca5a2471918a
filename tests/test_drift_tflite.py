"""Per-layer drift for TFLite: the runner keeps every op's output (`predict --all-tensors`,
LiteRT's experimental_preserve_all_tensors) and `edgeward drift` compares them node by node.

With preserve_all_tensors LiteRT gives each op XNNPACK takes a partition of its own, so every
op output is written out and still computed by XNNPACK, on the host and the device alike.
The board test runs on the emulated ARM64 board (scripts/arm64-testbed start); measured here
(AVX2 host, QEMU 10 Neoverse N2, 16 digits): fp32 logits differ by 3.8e-6 (first at the last
FULLY_CONNECTED), static int8 equals the host at every one of the 8 nodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.testbed import PROFILES, boards_started
from toolkit.devices.transport import runner_path

EXAMPLES = 16
DIGITS_CNN_NODES = ["RESHAPE#0", "DEPTHWISE_CONV_2D#1", "CONV_2D#2", "MAX_POOL_2D#3", "TRANSPOSE#4", "RESHAPE#5",
                    "FULLY_CONNECTED#6", "FULLY_CONNECTED#7"]


def _predict_all(model: Path, tmp_path: Path, count: int = 4):
    from toolkit.data import load_data

    inputs = tmp_path / "in.npz"
    np.savez(inputs, **load_data("builtin:digits:test").take(count).inputs)
    outputs = tmp_path / "out.npz"
    completed = subprocess.run([sys.executable, str(runner_path()), "predict", "--model", str(model), "--inputs",
                                str(inputs), "--outputs", str(outputs), "--all-tensors"],
                               capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return completed.returncode, lines[-1], outputs


def test_runner_returns_every_op_output(digits_cnn_tflite, tmp_path):
    code, result, outputs = _predict_all(digits_cnn_tflite, tmp_path)
    assert code == 0, result
    assert [t["node"] for t in result["tensors"]] == DIGITS_CNN_NODES
    assert result["outputs"] == 1 + len(DIGITS_CNN_NODES)
    with np.load(outputs) as archive:
        arrays = [archive[f"output_{i}"] for i in range(result["outputs"])]
    assert [a.shape for a in arrays[1:]] == [(4, 8, 8, 1), (4, 8, 8, 16), (4, 8, 8, 32), (4, 4, 4, 32), (4, 32, 4, 4),
                                             (4, 512), (4, 64), (4, 10)]
    np.testing.assert_array_equal(arrays[-1], arrays[0])  # the last op's output is the model's output
    assert float(np.abs(arrays[3]).max()) > 0 and arrays[3].min() >= 0  # conv + ReLU: real values, not zeros


def test_all_tensors_is_for_tflite_only(digits_cnn_onnx, tmp_path):
    code, result, _ = _predict_all(digits_cnn_onnx, tmp_path)
    assert code == 2 and result["event"] == "error" and "--all-tensors is for .tflite" in result["message"]


def test_drift_on_the_host_names_every_tflite_node(run_cli, digits_cnn_tflite):
    result = run_cli("--json", "drift", digits_cnn_tflite, "--data", "builtin:digits:test", "--examples", EXAMPLES,
                     "--device", "localhost")
    assert result.exit_code == 0, result.stderr
    [device] = result.json()["devices"]
    layers = device["per_layer"]
    assert layers["note"] is None and "preserve_all_tensors" in layers["method"]
    assert layers["nodes_compared"] == len(DIGITS_CNN_NODES) and layers["examples"] == EXAMPLES
    assert layers["first_different"] is None and {row["node"] for row in layers["worst"]} <= set(DIGITS_CNN_NODES)
    assert f"per-layer: all {len(DIGITS_CNN_NODES)} nodes equal to the host" in result.stderr


@pytest.fixture(scope="module")
def tflite_variants(tmp_path_factory) -> dict[str, Path]:
    from toolkit.cli import main

    folder = tmp_path_factory.mktemp("drift-tflite")
    steps = [["export", "builtin:digits-cnn", "--to", "tflite", "-o", folder / "tflite"],
             ["quantize", folder / "tflite", "--mode", "static-int8", "--calibration", "builtin:digits:train",
              "-o", folder / "tflite-static-int8"]]
    for step in steps:
        assert main([str(arg) for arg in step]) == 0, step
    return {name: folder / name for name in ("tflite", "tflite-static-int8")}


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.arm64
@pytest.mark.skipif(not boards_started("arm64-neoverse-n2"), reason=f"the emulated ARM64 board is not started "
                                               f"(scripts/arm64-testbed start; profiles in {PROFILES})")
def test_tflite_per_layer_drift_on_the_arm64_board(run_cli, tflite_variants):
    def drift(model):
        return run_cli("--json", "drift", model, "--data", "builtin:digits:test", "--examples", EXAMPLES,
                       "--device", "arm64-neoverse-n2", "--profiles", PROFILES)

    fp32 = drift(tflite_variants["tflite"])
    assert fp32.exit_code == 0, fp32.stderr
    [device] = fp32.json()["devices"]
    assert device["machine"] == "aarch64" and device["emulated"]
    layers = device["per_layer"]
    assert layers["nodes_compared"] == len(DIGITS_CNN_NODES) and layers["first_divergent"] is None
    assert [row["node"] for row in layers["worst"]][0] in DIGITS_CNN_NODES
    assert all(row["relative"] <= device["tolerance"] for row in layers["worst"])  # fp32: within 1e-5 of range
    [output] = device["outputs"]
    if not output["equal_to_host"]:  # ARM's fp32 kernels round differently: the report names where it starts
        assert layers["first_different"]["node"] in DIGITS_CNN_NODES
        assert "per-layer: first node that differs: " in fp32.stderr

    int8 = drift(tflite_variants["tflite-static-int8"])
    assert int8.exit_code == 0, int8.stderr
    report = int8.json()
    [device] = report["devices"]
    assert report["precision"] == "static-int8" and device["tolerance"] == 0.0
    assert device["outputs"][0]["equal_to_host"] and device["per_layer"]["first_different"] is None
    assert device["per_layer"]["nodes_compared"] == len(DIGITS_CNN_NODES)
    assert f"per-layer: all {len(DIGITS_CNN_NODES)} nodes equal to the host" in int8.stderr
