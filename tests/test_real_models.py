"""Models as users bring them: a factory reference with data only, TFLite files without a
SignatureDef, fp16-weight TFLite files (MediaPipe's kind), an opset-12 ONNX model under
int4-weight, and export errors that say how large they are against the outputs' scale.

The TFLite files are made here as third parties make them: litert-torch converts a small
CNN, then its SignatureDefs are stripped from the flatbuffer (older TensorFlow wrote none),
or ai-edge-quantizer's fp16 recipe stores its weights as FLOAT16 constants behind
DEQUANTIZE ops.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from installed import package_file

FACTORY_MODULE = '''
import torch


class SmallNet(torch.nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.head = torch.nn.Linear(8 * 6 * 6, 10)
        self.scale = scale

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1)) * self.scale


def make_net():
    return SmallNet()


def make_tiny():
    """Outputs of ~1e-27: an absolute error alone says nothing about them."""
    return SmallNet(1e-27)
'''


@pytest.fixture(scope="module")
def factory_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("factory")
    (folder / "realnets.py").write_text(FACTORY_MODULE)
    return folder


@pytest.fixture
def factory(factory_dir, monkeypatch) -> str:
    monkeypatch.syspath_prepend(str(factory_dir))
    yield "realnets"
    sys.modules.pop("realnets", None)


@pytest.fixture(scope="module")
def images_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "images.npz"
    np.savez(path, x=np.random.default_rng(0).random((32, 3, 8, 8), dtype=np.float32))
    return path


@pytest.fixture(scope="module")
def float_tflite(tmp_path_factory, factory_dir) -> Path:
    """The small CNN converted by litert-torch (a float model with a serving_default signature)."""
    import torch

    from toolkit.common.quiet import quiet

    spec = importlib.util.spec_from_file_location("realnets_tflite", factory_dir / "realnets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path_factory.mktemp("tflite") / "float.tflite"
    with quiet():
        import litert_torch

        litert_torch.convert(module.make_net().eval(), (torch.rand(1, 3, 8, 8),)).export(str(path))
    return path


@pytest.fixture(scope="module")
def signatureless_tflite(float_tflite) -> Path:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(float_tflite.read_bytes()))
    model.signatureDefs = []
    path = float_tflite.with_name("no-signature.tflite")
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return path


@pytest.fixture(scope="module")
def fp16_tflite(float_tflite, tmp_path_factory) -> Path:
    """fp16 weights behind DEQUANTIZE ops, as a plain file (no manifest saying it was quantized)."""
    from toolkit.quantize import quantize

    done = quantize(float_tflite, "fp16", tmp_path_factory.mktemp("fp16") / "artifact")
    path = float_tflite.with_name("fp16-weights.tflite")
    shutil.copyfile(done.model_path, path)
    return path


def _tflite_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


# ---------------------------------------------------------------- shapes from the data


@pytest.mark.slow
def test_a_factory_reference_takes_its_shapes_from_the_data(run_cli, tmp_path, factory, images_npz):
    out = tmp_path / "onnx"
    result = run_cli("export", f"{factory}:make_net", "--to", "onnx", "--input-shape", "x=1x3x8x8",
                     "--dynamic-batch", "-o", out)
    assert result.exit_code == 0, result.stderr
    result = run_cli("--json", "validate", out, "--reference", f"{factory}:make_net", "--data", images_npz)
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["samples"] == 32
    (figures,) = report["outputs"]
    assert figures["agreement"] == 1.0 and figures["sqnr_db"] > 80
    # --input-shape works on validate as on export; a pin that names no input is one clear line
    pinned = run_cli("validate", out, "--reference", f"{factory}:make_net", "--data", images_npz,
                     "--input-shape", "x=1x3x8x8", "--no-record")
    assert pinned.exit_code == 0, pinned.stderr
    wrong = run_cli("validate", out, "--reference", f"{factory}:make_net", "--data", images_npz,
                    "--input-shape", "x=1x3x8", "--no-record")
    assert wrong.exit_code == 2 and "Traceback" not in wrong.stderr


def test_data_shapes_reach_a_factory_with_a_free_batch(factory):
    from toolkit.sources import load_source

    source = load_source(f"{factory}:make_net", data_shapes={"images": [3, 8, 8]})
    assert source.inputs[0].name == "x" and source.inputs[0].shape == ["batch", 3, 8, 8]
    assert source.input_shapes == {}  # the data's shapes are not pins
    with pytest.raises(Exception, match="--input-shape"):
        load_source(f"{factory}:make_net")


# ---------------------------------------------------------------- TFLite without a signature


def test_a_signature_is_made_from_the_model_tensors(signatureless_tflite, float_tflite):
    from ai_edge_litert.interpreter import Interpreter

    from toolkit.quantize.tflite_rewrite import signature_keys, with_default_signature

    assert signature_keys(signatureless_tflite.read_bytes()) == []
    rewritten, added = with_default_signature(signatureless_tflite.read_bytes())
    assert added
    signatures = Interpreter(model_content=rewritten).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["serving_default_args_0"],
                                              "outputs": ["serving_default_output_0_output"]}}
    unchanged, added = with_default_signature(float_tflite.read_bytes())
    assert not added and unchanged == float_tflite.read_bytes()


@pytest.mark.slow
def test_static_int8_of_a_tflite_model_without_a_signature(run_cli, tmp_path, signatureless_tflite, images_npz):
    out = tmp_path / "static"
    result = run_cli("quantize", signatureless_tflite, "--mode", "static-int8", "--calibration", images_npz, "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["signature_added"] == "serving_default"
    assert manifest["quantization"]["calibration_samples"] == 32
    assert manifest["size"]["ratio"] < 0.5  # int8 weights (measured 0.42x: 5.9 of 14.2 KiB)
    # per-layer analysis against the signature-less float model works too
    result = run_cli("--json", "validate", out, "--reference", signatureless_tflite, "--data", images_npz,
                     "--per-layer", "--no-record")
    assert result.exit_code in (0, 1), result.stderr
    report = result.json()
    assert report["outputs"][0]["sqnr_db"] > 10  # measured 16.3 dB on random weights and inputs
    layers = report["per_layer"]["layers"]
    assert {"CONV_2D", "FULLY_CONNECTED"} <= {layer["op_type"] for layer in layers}
    assert all(layer["sqnr_db"] > 20 for layer in layers)  # measured 35-54 dB per node


# ---------------------------------------------------------------- fp16-weight TFLite


def test_fp16_constants_fold_to_float32(fp16_tflite, float_tflite):
    from toolkit.quantize.tflite_rewrite import constant_types, fold_fp16_constants

    assert constant_types(fp16_tflite.read_bytes())["FLOAT16"] == 2  # conv and linear weights
    folded, folds = fold_fp16_constants(fp16_tflite.read_bytes())
    assert folds == 2 and constant_types(folded)["FLOAT16"] == 0
    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    reference = _tflite_outputs(float_tflite, x)
    folded_path = fp16_tflite.with_name("folded.tflite")
    folded_path.write_bytes(folded)
    assert np.abs(_tflite_outputs(folded_path, x) - reference).max() < 1e-3 * np.abs(reference).max()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dynamic-int8", "weight-int8"])
def test_an_fp16_weight_model_shrinks_under_int8(run_cli, tmp_path, fp16_tflite, float_tflite, mode):
    out = tmp_path / mode
    result = run_cli("quantize", fp16_tflite, "--mode", mode, "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["fp16_constants_folded"] == 2
    # smaller than the fp16 file (measured 5.7 of 8.5 KiB), and the outputs moved: weights were quantized
    assert (out / "model.tflite").stat().st_size < 0.75 * fp16_tflite.stat().st_size
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    reference, got = _tflite_outputs(float_tflite, x), _tflite_outputs(out / "model.tflite", x)
    error = np.abs(got - reference).max()
    assert 0 < error < 0.05 * np.abs(reference).max()


def test_a_mode_that_changes_no_weight_says_so(run_cli, tmp_path, fp16_tflite):
    result = run_cli("quantize", fp16_tflite, "--mode", "fp16", "-o", tmp_path / "again")
    assert result.exit_code == 3
    assert "changed no weight" in result.stderr and "FLOAT16" in result.stderr
    assert not (tmp_path / "again").exists()


def test_allow_unchanged_keeps_the_model_warns_and_says_so(run_cli, tmp_path, fp16_tflite):
    out = tmp_path / "kept"
    result = run_cli("quantize", fp16_tflite, "--mode", "fp16", "--allow-unchanged", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "warning:" in result.stderr and "changed no weight" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["unchanged"] is True
    assert (out / "model.tflite").read_bytes() == fp16_tflite.read_bytes()


def test_onnx_dynamic_int8_on_a_graph_without_weights_is_not_a_silent_success(run_cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # Relu and Add only: nothing dynamic-int8 quantizes
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = run_cli("quantize", path, "--mode", "dynamic-int8", "-o", tmp_path / "q")
    assert result.exit_code == 3, result.stderr
    assert "changed no weight" in result.stderr and "Relu" in result.stderr
    assert not (tmp_path / "q").exists()


# ---------------------------------------------------------------- ONNX on an older opset


@pytest.mark.slow
def test_int4_weight_of_the_opset12_ppocr_recognizer_loads_and_validates(run_cli, tmp_path):
    """Measured: 0.68x (7.1 of 10.4 MiB), SQNR 13.9 dB, argmax agreement 0.97 per time step."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_third_party_models import _text_images
    finally:
        sys.path.remove(str(Path(__file__).parent))
    model = package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_rec_infer.onnx")
    npz = tmp_path / "rec.npz"
    np.savez(npz, x=_text_images(16, 48, 320, np.random.default_rng(1)))
    out = tmp_path / "int4"
    result = run_cli("quantize", model, "--mode", "int4-weight", "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["opset_converted"] == [12, 21]
    assert manifest["quantization"]["matmulnbits_nodes"] > 0
    assert manifest["size"]["ratio"] < 0.8
    result = run_cli("--json", "validate", out, "--reference", model, "--data", npz, "--no-record")
    assert result.exit_code in (0, 1), result.stderr
    (figures,) = result.json()["outputs"]
    assert figures["sqnr_db"] > 11 and figures["agreement"] >= 0.93


# ---------------------------------------------------------------- export error against the outputs' scale


@pytest.mark.slow
def test_export_error_is_reported_against_the_outputs_scale(run_cli, tmp_path, factory):
    import torch

    from toolkit.errors import EdgewardWarning
    from toolkit.export import measure_error, warn_if_far
    from toolkit.runtime import open_model
    from toolkit.sources import load_source

    out = tmp_path / "tiny"
    result = run_cli("export", f"{factory}:make_tiny", "--to", "onnx", "--input-shape", "x=1x3x8x8", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "relative to outputs of up to" in result.stderr + result.stdout
    error = json.loads((out / "manifest.json").read_text())["export_error"]
    assert 1e-30 < error["output_scale"] < 1e-25
    assert error["max_abs_error"] < 1e-30 and error["relative_error"] < 1e-5
    # a change of 10% of the outputs' scale is far below the absolute 1e-4, and still warned
    source = load_source(f"{factory}:make_tiny", input_shapes={"x": [1, 3, 8, 8]})
    with torch.no_grad():
        source.module.head.bias += 0.1 * float(torch.abs(source.module.head.bias).max())
    far = measure_error(source, open_model(out / "model.onnx"))
    assert far["max_abs_error"] < 1e-4 and far["relative_error"] > 1e-3
    with pytest.warns(EdgewardWarning, match="relative to outputs"):
        assert warn_if_far(far, "onnx")
