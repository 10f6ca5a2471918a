"""Host-vs-device drift (`edgeward drift`, issue 14 item 3).

The board tests run on the emulated ARM64 board (scripts/arm64-testbed start; QEMU user
mode 10, aarch64 onnxruntime): the same ONNX model, the same inputs, this host's kernels
against Cortex-A76's. Measured here (AVX2 host, QEMU 10.0.2, 32 digits): ONNX fp16 differs
from the host by about 0.116 (0.3% of the logits' range; onnxruntime computes in fp16 on
cores with fp16 arithmetic), first at the first Conv; static int8 equals the host bit for
bit, node by node. They skip when the board is not started.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.testbed import PROFILES, boards_started
from toolkit.validate.drift import ALL_FEATURES, FAMILY_FEATURES, TOLERANCE, precision_of, tolerance

EXAMPLES = 32  # every inference on the board is emulated


def test_tolerance_table_depends_on_precision_and_family():
    a53, a76, n2 = (FAMILY_FEATURES[f] for f in ("cortex-a53", "cortex-a76", "neoverse-n2"))
    for features in (a53, a76, n2, ALL_FEATURES):
        assert tolerance("static-int8", features) == 0.0  # integer arithmetic: equality everywhere
    assert tolerance("fp16", a76) > tolerance("fp16", a53)  # fp16 arithmetic on A76
    assert tolerance("dynamic-int8", n2) > tolerance("dynamic-int8", a76)  # i8mm kernels on N2
    assert tolerance("int4-weights", a53) == TOLERANCE["other"]["base"]
    assert precision_of({}) == "fp32" and precision_of({"mode": "static-int8"}) == "static-int8"
    assert precision_of({"options": {"mode": "fp16"}}) == "fp16" and precision_of({"mode": "int4"}) == "other"


def test_drift_on_the_host_itself_is_exact(run_cli, digits_cnn_onnx):
    """localhost against the host: the same runner and kernels, so every output and node is equal."""
    result = run_cli("--json", "drift", digits_cnn_onnx, "--data", "builtin:digits:test", "--examples", "64",
                     "--device", "localhost", "--reference", "builtin:digits-cnn")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    [device] = report["devices"]
    [output] = device["outputs"]
    assert output["equal_to_host"] and output["max_abs_vs_host"] == 0.0 and output["agreement_with_host"] == 1.0
    assert 0 < output["max_abs_vs_reference"] < 1e-4  # the exported float model against its torch source
    assert device["per_layer"]["nodes_compared"] >= 5 and device["per_layer"]["first_different"] is None


def test_drift_bad_input_is_one_line(run_cli, digits_cnn_onnx):
    result = run_cli("drift", digits_cnn_onnx, "--data", "builtin:digits:test", "--device", "raspbery-pi-5")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "raspberry-pi-5" in result.stderr


board = pytest.mark.skipif(not boards_started("arm64-cortex-a76"), reason=f"the emulated ARM64 board is not started "
                                                     f"(scripts/arm64-testbed start; profiles in {PROFILES})")


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, Path]:
    from toolkit.cli import main

    folder = tmp_path_factory.mktemp("drift-variants")
    steps = [["export", "builtin:digits-cnn", "--to", "onnx", "--dynamic-batch", "-o", folder / "onnx"],
             ["quantize", folder / "onnx", "--mode", "fp16", "-o", folder / "onnx-fp16"],
             ["quantize", folder / "onnx", "--mode", "static-int8", "--calibration", "builtin:digits:train",
              "-o", folder / "onnx-static-int8"]]
    for step in steps:
        assert main([str(arg) for arg in step]) == 0, step
    return {name: folder / name for name in ("onnx", "onnx-fp16", "onnx-static-int8")}


def _drift(run_cli, model: Path, *args):
    return run_cli("--json", "drift", model, "--data", "builtin:digits:test", "--examples", EXAMPLES,
                   "--reference", "builtin:digits-cnn", "--profiles", PROFILES, *args)


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.arm64
@board
def test_fp16_drifts_on_cortex_a76_and_static_int8_is_exact(run_cli, variants):
    fp16 = _drift(run_cli, variants["onnx-fp16"], "--device", "arm64-cortex-a76")
    assert fp16.exit_code == 0, fp16.stderr
    report = fp16.json()
    assert report["precision"] == "fp16"
    [device] = report["devices"]
    assert device["machine"] == "aarch64" and device["cpu_family"] == "cortex-a76" and device["emulated"]
    [output] = device["outputs"]
    # onnxruntime's fp16 kernels on A76 against this host's fp32 arithmetic: measured 0.116 here
    assert 0.01 < output["max_abs_vs_host"] < 0.5 and not output["equal_to_host"]
    assert output["within_tolerance"] and output["agreement_with_host"] >= 1 - 1 / EXAMPLES
    assert output["max_abs_vs_reference"] > report["host_vs_reference"][0]["max_abs"]  # further from fp32 than the host
    layers = device["per_layer"]
    assert layers["first_different"]["op_type"] == "Conv" and layers["first_different"]["order"] == 0
    assert "logits" in fp16.stderr and "first node that differs" in fp16.stderr

    int8 = _drift(run_cli, variants["onnx-static-int8"], "--device", "arm64-cortex-a76")
    assert int8.exit_code == 0, int8.stderr
    report = int8.json()
    assert report["precision"] == "static-int8"
    [device] = report["devices"]
    assert device["tolerance"] == 0.0
    [output] = device["outputs"]
    assert output["equal_to_host"] and output["max_abs_vs_host"] == 0.0
    assert device["per_layer"]["nodes_compared"] >= 5 and device["per_layer"]["first_different"] is None
    assert "EQUAL" in int8.stderr


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.arm64
@board
def test_drift_beyond_tolerance_is_exit_1(run_cli, variants, tmp_path):
    """A board whose profile says Cortex-A53 (fp32 arithmetic) but whose cores compute fp16 in
    fp16 (QEMU's Cortex-A76): the fp16 model drifts 30x past the A53 tolerance."""
    text = (PROFILES / "arm64-cortex-a76.yaml").read_text().replace("cpu_family: cortex-a76", "cpu_family: cortex-a53")
    (tmp_path / "mislabelled-board.yaml").write_text(text)
    result = run_cli("--json", "drift", variants["onnx-fp16"], "--data", "builtin:digits:test", "--examples",
                     EXAMPLES, "--device", "mislabelled-board", "--profiles", tmp_path, "--no-per-layer",
                     "-o", tmp_path / "drift.json")
    assert result.exit_code == 1, result.stderr
    assert "drift beyond tolerance: mislabelled-board logits" in result.stderr
    [output] = result.json()["devices"][0]["outputs"]
    assert not output["within_tolerance"] and output["relative_vs_host"] > TOLERANCE["fp16"]["base"]
    assert (tmp_path / "drift.json").is_file()
