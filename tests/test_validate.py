"""`edgeward validate` on the real digits models: figures checked against an independent
numpy/onnxruntime computation, gates and exit codes, broken candidates, per-layer error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

ONNX_MODES = ("static-int8", "dynamic-int8", "fp16", "int4-weight")


def _session_outputs(path, x, batch=256):
    """Plain onnxruntime, 256 examples a run (dynamic int8's activation scales depend on the batch)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def _tflite_outputs(path, x):
    """One example at a time through the LiteRT interpreter, (de)quantizing I/O by hand."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for example in x:
        value = example[None]
        scale, zero = inp["quantization"]
        if scale:
            value = np.clip(np.round(value / scale + zero), -128, 127)
        interpreter.set_tensor(inp["index"], value.astype(inp["dtype"]))
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"]).astype(np.float32)
        scale, zero = out["quantization"]
        rows.append((result - zero) * scale if scale else result)
    return np.concatenate(rows)


def _sqnr(cand, ref):
    ref64 = ref.astype(np.float64)
    return 10 * math.log10(np.square(ref64).sum() / np.square(cand.astype(np.float64) - ref64).sum())


def _expected_exit(cand, ref, labels, max_drop=1.0, min_agreement=0.99, min_sqnr=20.0):
    drop = ((ref.argmax(1) == labels).mean() - (cand.argmax(1) == labels).mean()) * 100
    agreement = (cand.argmax(1) == ref.argmax(1)).mean()
    ok = drop <= max_drop + 1e-9 and agreement >= min_agreement and _sqnr(cand, ref) >= min_sqnr
    return 0 if ok else 1


@pytest.fixture(scope="module")
def quantized_onnx(tmp_path_factory, digits_cnn_onnx):
    from toolkit.quantize import quantize

    root = tmp_path_factory.mktemp("quantized")
    return {
        mode: quantize(digits_cnn_onnx, mode, root / mode, calibration="builtin:digits:train").out_dir
        for mode in ONNX_MODES
    }


@pytest.fixture(scope="module")
def zeroed_onnx(tmp_path_factory, digits_cnn_onnx):
    """The CNN with its second convolution's weights set to zero: a broken node to find."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(digits_cnn_onnx))
    for init in model.graph.initializer:
        if init.name == "2.weight":
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    path = tmp_path_factory.mktemp("zeroed") / "zeroed.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("mode", ONNX_MODES)
def test_quantized_onnx_figures_match_an_independent_computation(mode, quantized_onnx, digits_cnn_onnx,
                                                                   digits_test, run_cli, tmp_path):
    folder = quantized_onnx[mode]
    x, labels = digits_test.inputs["x"], digits_test.labels
    cand = _session_outputs(folder / "model.onnx", x)
    ref = _session_outputs(digits_cnn_onnx, x)

    result = run_cli("--json", "validate", folder, "--reference", digits_cnn_onnx, "--data", "builtin:digits:test",
                     "-o", tmp_path / "report")
    assert result.exit_code == _expected_exit(cand, ref, labels), result.stderr
    report = result.json()
    logits = report["outputs"][0]
    assert report["samples"] == len(labels) == 450
    assert abs(logits["candidate_accuracy"] * 100 - (cand.argmax(1) == labels).mean() * 100) < 0.1
    assert abs(logits["reference_accuracy"] * 100 - (ref.argmax(1) == labels).mean() * 100) < 0.1
    assert logits["reference_accuracy"] > 0.95
    assert logits["agreement"] == pytest.approx((cand.argmax(1) == ref.argmax(1)).mean())
    assert logits["max_abs_error"] == pytest.approx(np.abs(cand - ref).max(), rel=1e-5)
    assert logits["sqnr_db"] == pytest.approx(_sqnr(cand, ref), abs=1e-3)
    assert logits["nonfinite"] == 0
    # the report files and the manifest record
    for name in ("report.json", "report.md", "error_hist_logits.png"):
        assert (tmp_path / "report" / name).is_file()
    assert (tmp_path / "report" / "error_hist_logits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["validation"]["passed"] == (result.exit_code == 0)
    assert manifest["validation"]["outputs"][0]["candidate_accuracy"] == pytest.approx(logits["candidate_accuracy"])
    assert manifest["stage"] == "quantize"  # the rest of the manifest is kept


def test_gates_pass_and_fail_as_stated(quantized_onnx, digits_cnn_onnx, run_cli):
    folder = quantized_onnx["static-int8"]
    common = ("validate", folder, "--reference", digits_cnn_onnx, "--data", "builtin:digits:test", "--no-record")
    passed = run_cli(*common)
    assert passed.exit_code == 0, passed.stderr
    assert "PASSED" in passed.stdout

    sqnr = run_cli(*common, "--min-sqnr", "80")
    assert sqnr.exit_code == 1
    assert "SQNR of logits (dB) is" in sqnr.stderr and "bar >= 80" in sqnr.stderr
    assert run_cli(*common, "--min-sqnr", "80", "--no-gate", "sqnr").exit_code == 0

    strict = run_cli("validate", quantized_onnx["int4-weight"], "--reference", digits_cnn_onnx, "--data",
                     "builtin:digits:test", "--max-drop", "0", "--min-agreement", "1", "--no-record", "--json")
    report = strict.json()
    drop, agreement = report["outputs"][0]["drop"], report["outputs"][0]["agreement"]
    assert strict.exit_code == (0 if drop <= 0 and agreement >= 1 else 1)
    if strict.exit_code:
        assert "bar <= 0" in strict.stderr or "bar >= 1" in strict.stderr


def test_library_returns_the_report_and_json_is_strict(quantized_onnx, digits_cnn_onnx):
    from toolkit.validate import validate

    report = validate(quantized_onnx["fp16"], digits_cnn_onnx, "builtin:digits:test", min_sqnr=200.0, record=False)
    assert not report.passed  # the library reports; it does not raise
    assert report.failed_gates()[0].figure.startswith("SQNR")
    json.dumps(report.to_dict(), allow_nan=False)


def test_mlp_against_the_cnn_fails_with_exit_1(tmp_path, digits_cnn_onnx, run_cli):
    import torch

    from toolkit.models.digits import load_builtin

    path = tmp_path / "mlp.onnx"
    torch.onnx.export(load_builtin("digits-mlp"), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=True,
                      external_data=False, input_names=["x"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    result = run_cli("--json", "validate", path, "--reference", digits_cnn_onnx, "--data", "builtin:digits:test")
    report = result.json()
    # two good models that disagree: accuracy is close, agreement and SQNR are not
    assert report["outputs"][0]["candidate_accuracy"] > 0.85
    assert result.exit_code == 1
    assert not report["passed"]
    assert "error: validation failed:" in result.stderr
    assert "agreement" in result.stderr or "SQNR" in result.stderr


def test_zeroed_node_fails_and_per_layer_names_it_first(zeroed_onnx, digits_cnn_onnx, run_cli, tmp_path):
    out = tmp_path / "report"
    result = run_cli("validate", zeroed_onnx, "--reference", digits_cnn_onnx, "--data", "builtin:digits:test",
                     "--per-layer", "--top", "3", "-o", out)
    assert result.exit_code == 1
    worst_lines = result.stdout.split("worst nodes")[1].splitlines()
    assert "1. node_conv2d_1 (Conv)" in worst_lines[1]
    report = json.loads((out / "report.json").read_text())
    worst = report["per_layer"]["worst"]
    assert worst[0]["node"] == "node_conv2d_1" and worst[0]["op_type"] == "Conv"
    assert worst[0]["local_sqnr_db"] < 3  # the zeroed conv's output is its bias only
    assert len(worst) <= 3
    layers = report["per_layer"]["layers"]
    assert [layer["order"] for layer in layers] == sorted(layer["order"] for layer in layers)
    assert layers[0]["sqnr_db"] is None  # null = exact: the first conv is untouched
    assert (out / "per_layer_sqnr.png").read_bytes()[:4] == b"\x89PNG"
    assert "node_conv2d_1" in (out / "report.md").read_text()


def test_per_layer_matches_tensors_through_qdq_pairs(quantized_onnx, digits_cnn_onnx, digits_test):
    from toolkit.validate.per_layer import per_layer_error

    result = per_layer_error(quantized_onnx["static-int8"], digits_cnn_onnx, digits_test, top=3)
    by_tensor = {layer.tensor: layer for layer in result.layers}
    assert by_tensor["relu"].candidate_tensor == "relu_DequantizeLinear_Output"
    assert by_tensor["relu"].nodes == ["node_conv2d", "node_relu"]  # Conv+Relu fused in the QDQ graph
    assert 25 < by_tensor["relu"].sqnr_db < 80
    assert all(layer.op_type for layer in result.worst)
    assert len(result.worst) == 3


def test_cross_format_and_tflite(digits_cnn_tflite, digits_cnn_onnx, digits_test, run_cli, tmp_path):
    from toolkit.quantize import quantize

    x, labels = digits_test.inputs["x"], digits_test.labels
    folder = quantize(digits_cnn_tflite, "dynamic-int8", tmp_path / "dyn").out_dir
    cand = _tflite_outputs(folder / "model.tflite", x)
    ref = _session_outputs(digits_cnn_onnx, x)
    # a TFLite candidate (input args_0, batch 1) against an ONNX reference (input x, dynamic batch)
    result = run_cli("--json", "validate", folder, "--reference", digits_cnn_onnx, "--data", "builtin:digits:test",
                     "--per-layer", "--top", "2")
    # --per-layer finds the float TFLite parent through the candidate's manifest
    assert result.exit_code == _expected_exit(cand, ref, labels), result.stderr
    report = result.json()
    assert abs(report["outputs"][0]["candidate_accuracy"] * 100 - (cand.argmax(1) == labels).mean() * 100) < 0.1
    assert report["candidate_format"] == "tflite" and report["reference_format"] == "onnx"
    assert report["per_layer"]["format"] == "tflite"
    assert report["per_layer"]["worst"] and report["per_layer"]["worst"][0]["op_type"]


def test_builtin_torch_reference(quantized_onnx, digits_test, run_cli):
    x, labels = digits_test.inputs["x"], digits_test.labels
    cand = _session_outputs(quantized_onnx["static-int8"] / "model.onnx", x)
    result = run_cli("--json", "validate", quantized_onnx["static-int8"], "--reference", "builtin:digits-cnn",
                     "--data", "builtin:digits:test", "--no-record")
    report = result.json()
    assert abs(report["outputs"][0]["candidate_accuracy"] * 100 - (cand.argmax(1) == labels).mean() * 100) < 0.1
    assert report["outputs"][0]["reference_accuracy"] > 0.95
    assert result.exit_code in (0, 1)
    assert result.exit_code == (0 if report["passed"] else 1)


def test_device_option_runs_the_candidate_there(quantized_onnx, digits_cnn_onnx, run_cli):
    common = ("--json", "validate", quantized_onnx["static-int8"], "--reference", digits_cnn_onnx, "--data",
              "builtin:digits:test", "--no-record")
    host = run_cli(*common).json()
    device = run_cli(*common, "--device", "localhost")
    assert device.exit_code == (0 if device.json()["passed"] else 1), device.stderr
    report = device.json()
    assert report["device"] == "localhost"
    assert report["outputs"][0]["candidate_accuracy"] == pytest.approx(host["outputs"][0]["candidate_accuracy"])
    assert report["outputs"][0]["agreement"] == pytest.approx(host["outputs"][0]["agreement"])
    assert run_cli(*common, "--device", "no-such-device").exit_code == 2
