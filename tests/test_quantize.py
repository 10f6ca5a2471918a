"""Quantize the builtin digits CNN in every mode on both formats, on real runtimes and real data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from toolkit.errors import BadInput
from toolkit.quantize import quantize
from toolkit.quantize.modes import MODES
from toolkit.runtime import open_model, run_batched

INT8_MODES = {"dynamic-int8", "static-int8", "weight-int8"}


def accuracy(model_path, dataset) -> float:
    runner = open_model(model_path)
    logits = run_batched(runner, {runner.inputs[0].name: dataset.inputs["x"]})[0]
    return float((logits.argmax(1) == dataset.labels).mean() * 100)


@pytest.fixture(scope="module")
def float_models(digits_cnn_onnx, digits_cnn_tflite, digits_test):
    models = {"onnx": digits_cnn_onnx, "tflite": digits_cnn_tflite}
    return {fmt: (path, accuracy(path, digits_test)) for fmt, path in models.items()}


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: f"{mode.format}-{mode.name}")
def test_every_mode_runs_and_keeps_accuracy(mode, float_models, digits_test, tmp_path):
    float_path, float_accuracy = float_models[mode.format]
    calibration = "builtin:digits:train" if mode.needs_calibration else None
    result = quantize(float_path, mode.name, tmp_path / "out", calibration=calibration)

    assert result.model_path.is_file() and result.format == mode.format
    assert result.size_bytes == result.model_path.stat().st_size
    assert result.float_size_bytes == float_path.stat().st_size
    assert result.size_ratio == pytest.approx(result.size_bytes / result.float_size_bytes, abs=1e-4)
    if mode.name in INT8_MODES or "int4" in mode.name:
        assert result.size_ratio <= 0.30, f"{mode.name} is {result.size_ratio:.3f}x the float file"
    else:  # fp16
        assert 0.4 <= result.size_ratio <= 0.6

    quantized_accuracy = accuracy(result.model_path, digits_test)
    allowed = 1.0 if mode.name == "static-int8" else 2.0
    assert quantized_accuracy >= float_accuracy - allowed, (mode.name, quantized_accuracy, float_accuracy)

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stage"] == "quantize" and manifest["mode"] == mode.name
    assert manifest["model_file"] == result.model_path.name
    assert manifest["files"][result.model_path.name]["bytes"] == result.size_bytes
    assert manifest["size"]["float_bytes"] == float_path.stat().st_size
    assert len(manifest["parent"]["sha256"]) == 64
    if mode.needs_calibration:
        assert manifest["calibration"] == {"data": "builtin:digits:train", "examples": 256}


def test_static_int8_onnx_graph_is_qdq_and_int8(float_models, tmp_path):
    import onnx

    result = quantize(float_models["onnx"][0], "static-int8", tmp_path / "q", calibration="builtin:digits:train")
    graph = onnx.load(str(result.model_path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    from toolkit.common.cpu import u8s8_saturates_here

    # uint8 weights on an x86 CPU without VNNI, where onnxruntime's uint8 x int8 kernels saturate
    expected = onnx.TensorProto.UINT8 if u8s8_saturates_here() else onnx.TensorProto.INT8
    weights = [t for t in graph.initializer if t.name.endswith("weight_quantized")]
    assert weights and all(t.data_type == expected for t in weights)
    # the exporter's stack traces (local paths) are not carried into the artifact
    assert not any(p.key.startswith("pkg.torch") for node in graph.node for p in node.metadata_props)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_onnx_calibration_methods(method, float_models, digits_test, tmp_path):
    float_path, float_accuracy = float_models["onnx"]
    result = quantize(float_path, "static-int8", tmp_path / "q", calibration="builtin:digits:train",
                      method=method, calibration_size=128)
    assert result.manifest["quantization"]["calibration_method"] == method
    assert accuracy(result.model_path, digits_test) >= float_accuracy - 1.0


def test_int4_weight_rewrites_gemm_so_matmulnbits_applies(float_models, tmp_path):
    import onnx

    result = quantize(float_models["onnx"][0], "int4-weight", tmp_path / "q")
    ops = [node.op_type for node in onnx.load(str(result.model_path)).graph.node]
    assert ops.count("MatMulNBits") == 2 and "Gemm" not in ops
    assert result.manifest["quantization"]["gemm_rewritten"] == 2


def test_exclude_nodes_keeps_them_float(float_models, tmp_path):
    import onnx

    float_path = float_models["onnx"][0]
    gemms = [n.name for n in onnx.load(str(float_path)).graph.node if n.op_type == "Gemm"]
    full = quantize(float_path, "dynamic-int8", tmp_path / "all")
    mixed = quantize(float_path, "dynamic-int8", tmp_path / "mixed", exclude_nodes=gemms)
    ops = [n.op_type for n in onnx.load(str(mixed.model_path)).graph.node]
    assert "MatMulInteger" not in ops and ops.count("MatMul") == 2
    assert ops.count("DequantizeLinear") == ops.count("Conv")  # Conv weights stay int8 (weight-only)
    assert mixed.size_bytes > full.size_bytes


def test_artifact_folder_in_and_origin_carried(float_models, tmp_path):
    from toolkit.artifacts import new_manifest, write_manifest

    folder = tmp_path / "digits-onnx"
    folder.mkdir()
    shutil.copy(float_models["onnx"][0], folder / "model.onnx")
    write_manifest(folder, new_manifest("export", folder, source={"spec": "builtin:digits-cnn"}, options={},
                                        model_file="model.onnx"))
    result = quantize(folder, "fp16", tmp_path / "fp16")
    assert result.manifest["origin"] == {"spec": "builtin:digits-cnn"}
    assert result.manifest["parent"]["stage"] == "export"
    with pytest.raises(BadInput, match="already quantized"):
        quantize(tmp_path / "fp16", "dynamic-int8", tmp_path / "twice")


def test_cli_list_modes_text_and_json(run_cli):
    result = run_cli("quantize", "--list-modes")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(MODES) + 1
    assert any(line.startswith("tflite") and "weight-int4" in line for line in lines)
    rows = run_cli("quantize", "--list-modes", "--json").json()["modes"]
    assert {(row["format"], row["mode"]) for row in rows} >= {("onnx", "int4-weight"), ("tflite", "static-int8")}


def test_cli_quantize_default_folder_and_json(run_cli, float_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "digits.tflite"
    shutil.copy(float_models["tflite"][0], model)
    result = run_cli("--json", "quantize", model, "--mode", "static-int8", "--calibration", "builtin:digits:train",
                     "--calibration-size", "64")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["out_dir"] == str(tmp_path / "exported" / "digits-static-int8")
    assert data["size_ratio"] <= 0.30
    assert (tmp_path / "exported" / "digits-static-int8" / "model.tflite").is_file()
    # a second run without --force refuses and leaves the artifact as it was
    before = (tmp_path / "exported" / "digits-static-int8" / "model.tflite").read_bytes()
    again = run_cli("quantize", model, "--mode", "static-int8", "--calibration", "builtin:digits:train")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert (tmp_path / "exported" / "digits-static-int8" / "model.tflite").read_bytes() == before
    forced = run_cli("quantize", model, "--mode", "fp16", "-o", "exported/digits-static-int8", "--force")
    assert forced.exit_code == 0 and "fp16 tflite" in forced.stdout


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing written


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _bad_cases(float_models, tmp_path):
    onnx_path, tflite_path = float_models["onnx"][0], float_models["tflite"][0]
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[:2000])
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)
    x = np.zeros((8, 1, 8, 8), np.float32)
    return {
        "wrong-format-mode": ([onnx_path, "--mode", "weight-int4"], "int4-weight"),
        "wrong-format-mode-tflite": ([tflite_path, "--mode", "int4-weight"], "weight-int4"),
        "unknown-mode": ([onnx_path, "--mode", "int3"], "unknown mode"),
        "no-calibration": ([onnx_path, "--mode", "static-int8"], "calibration"),
        "wrong-name": ([onnx_path, "--mode", "static-int8", "--calibration",
                        _npz(tmp_path / "names.npz", image=x, other=x)], "needs"),
        "wrong-shape": ([onnx_path, "--mode", "static-int8", "--calibration",
                         _npz(tmp_path / "shape.npz", x=np.zeros((8, 1, 9, 9), np.float32))], "shape"),
        "wrong-shape-tflite": ([tflite_path, "--mode", "static-int8", "--calibration",
                                _npz(tmp_path / "rank.npz", x=np.zeros((8, 64), np.float32))], "rank"),
        "empty": ([onnx_path, "--mode", "static-int8", "--calibration",
                   _npz(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))], "no examples"),
        "missing": ([tmp_path / "nope.onnx", "--mode", "fp16"], "no such file"),
        "truncated": ([truncated, "--mode", "fp16"], "truncated.onnx"),
        "not-tflite": ([garbage, "--mode", "fp16"], "not a TFLite model"),
        "not-a-model": ([_npz(tmp_path / "data.npz", x=x), "--mode", "fp16"], ".onnx or .tflite"),
    }


CASES = ["wrong-format-mode", "wrong-format-mode-tflite", "unknown-mode", "no-calibration", "wrong-name",
         "wrong-shape", "wrong-shape-tflite", "empty", "missing", "truncated", "not-tflite", "not-a-model"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exit_2_one_line_nothing_written(case, run_cli, float_models, tmp_path):
    args, expected = _bad_cases(float_models, tmp_path)[case]
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("quantize", *args, "-o", out)
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.strip().splitlines() if not line.startswith("INFO: ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert expected in errors[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_wrong_mode_lists_the_modes_that_apply(run_cli, float_models):
    result = run_cli("quantize", float_models["onnx"][0], "--mode", "weight-int8")
    assert "dynamic-int8, static-int8, fp16, int4-weight" in result.stderr


def test_unsupported_int4_on_a_graph_without_matmul_exits_3(run_cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])], [weight],
    )
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = run_cli("quantize", path, "--mode", "int4-weight", "-o", tmp_path / "out")
    assert result.exit_code == 3
    assert "unchanged" in result.stderr and "no MatMul or Gemm" in result.stderr
    assert not (tmp_path / "out").exists()


def test_onnx_with_external_data(float_models, digits_test, tmp_path):
    import onnx

    folder = tmp_path / "external"
    folder.mkdir()
    model = onnx.load(str(float_models["onnx"][0]))
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True,
                    location="model.onnx.data", size_threshold=1024)
    total = (folder / "model.onnx").stat().st_size + (folder / "model.onnx.data").stat().st_size
    result = quantize(folder / "model.onnx", "static-int8", tmp_path / "q", calibration="builtin:digits:train")
    assert result.float_size_bytes == total
    assert accuracy(result.model_path, digits_test) >= float_models["onnx"][1] - 1.0


def test_external_data_outside_the_folder_is_refused(float_models, run_cli, tmp_path):
    import onnx

    model = onnx.load(str(float_models["onnx"][0]))
    onnx.save_model(model, str(tmp_path / "weights.onnx"), save_as_external_data=True,
                    location="weights.bin", size_threshold=1024)
    inner = tmp_path / "inner"
    inner.mkdir()
    escaped = onnx.load(str(tmp_path / "weights.onnx"), load_external_data=False)
    for tensor in escaped.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save_model(escaped, str(inner / "model.onnx"))
    result = run_cli("quantize", inner / "model.onnx", "--mode", "dynamic-int8", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "leaves the model's folder" in result.stderr
    assert not (tmp_path / "out").exists()
