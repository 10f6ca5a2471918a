"""Exit codes from the CLI on real files: a valid model Edgeward cannot handle is 3 (Unsupported),
a broken or wrong file is 2 (BadInput), and neither is an "unexpected" error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def onnx_model(path: Path, node, *, dtype=None, opset: int = 17, extra_opsets=()) -> Path:
    """A one-node ONNX model x[1, 4] -> y[1, 4], written with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper

    dtype = TensorProto.FLOAT if dtype is None else dtype
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, [1, 4])],
                              [helper.make_tensor_value_info("y", dtype, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from onnx import TensorProto, helper

    root = tmp_path_factory.mktemp("exit-codes")
    relu = helper.make_node("Relu", ["x"], ["y"])
    made = {
        "ok": onnx_model(root / "ok.onnx", relu),
        # valid, but onnxruntime has no kernel / knows no such op / does not run such a new opset
        "no_kernel": onnx_model(root / "int16-relu.onnx", relu, dtype=TensorProto.INT16),
        "custom_op": onnx_model(root / "custom.onnx", helper.make_node("Foo", ["x"], ["y"], domain="com.example"),
                                extra_opsets=[helper.make_opsetid("com.example", 1)]),
        "new_opset": onnx_model(root / "opset-40.onnx", relu, opset=40),
        # invalid: Relu does not take uint16
        "invalid": onnx_model(root / "uint16-relu.onnx", relu, dtype=TensorProto.UINT16),
    }
    whole = made["ok"].read_bytes()
    made["truncated"] = root / "truncated.onnx"
    made["truncated"].write_bytes(whole[: len(whole) // 2])
    made["wrong_kind"] = root / "photo.onnx"  # a PNG under a model's name
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(made["wrong_kind"], format="PNG")
    made["data"] = root / "x.npz"
    np.savez(made["data"], x=np.ones((3, 4), np.float32))
    return made


def validate(run_cli, candidate, files, *extra):
    return run_cli("validate", candidate, "--reference", files["ok"], "--data", files["data"], *extra)


@pytest.mark.parametrize("case", ["no_kernel", "custom_op", "new_opset"])
def test_a_valid_onnx_model_onnxruntime_cannot_run_is_exit_3(run_cli, files, case):
    result = validate(run_cli, files[case], files)
    assert result.exit_code == 3, result.stderr
    assert "onnxruntime" in result.stderr and "cannot run this model" in result.stderr
    assert "unexpected" not in result.stderr and "[ONNXRuntimeError]" not in result.stderr
    if case == "new_opset":
        assert "opset" in result.stderr
    if case == "custom_op":
        assert "com.example:Foo" in result.stderr


@pytest.mark.parametrize("case", ["truncated", "wrong_kind", "invalid"])
def test_a_broken_or_wrong_onnx_file_is_exit_2(run_cli, files, case):
    result = validate(run_cli, files[case], files)
    assert result.exit_code == 2, result.stderr
    assert files[case].name in result.stderr and "unexpected" not in result.stderr


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory) -> dict[str, Path]:
    """A one-layer TFLite model, the same with its op made a custom op, and with an op version
    newer than the interpreter knows (both rewritten with LiteRT's flatbuffer schema)."""
    import flatbuffers
    import litert_torch
    import torch
    from ai_edge_litert import schema_py_generated as schema

    root = tmp_path_factory.mktemp("exit-codes-tflite")
    source = root / "linear.tflite"
    torch.manual_seed(0)
    litert_torch.convert(torch.nn.Linear(4, 3).eval(), (torch.zeros(1, 4),)).export(str(source))

    def rewritten(name: str, change) -> Path:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(source.read_bytes(), 0))
        change(model.operatorCodes[0])
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        (root / name).write_bytes(bytes(builder.Output()))
        return root / name

    def custom(code):
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = b"EdgewardTestOp"

    def newer(code):
        code.version = 99

    data = root / "x.npz"
    np.savez(data, x=np.ones((2, 4), np.float32))
    return {"ok": source, "custom_op": rewritten("custom.tflite", custom),
            "new_version": rewritten("newer.tflite", newer), "data": data}


@pytest.mark.parametrize("case", ["custom_op", "new_version"])
def test_a_valid_tflite_model_the_interpreter_cannot_run_is_exit_3(run_cli, tflite_files, case):
    result = validate(run_cli, tflite_files[case], tflite_files)
    assert result.exit_code == 3, result.stderr
    assert "the TFLite interpreter cannot run this model" in result.stderr
    assert ("EdgewardTestOp" if case == "custom_op" else "version '99'") in result.stderr


def test_estimating_a_tflite_model_the_interpreter_cannot_run_is_exit_3(run_cli, tflite_files):
    result = run_cli("bench", tflite_files["custom_op"], "--estimate", "--device", "raspberry-pi-5")
    assert result.exit_code == 3, result.stderr
    assert "EdgewardTestOp" in result.stderr and "unexpected" not in result.stderr


def test_a_truncated_tflite_model_is_exit_2(run_cli, tflite_files, tmp_path):
    truncated = tmp_path / "truncated.tflite"
    whole = tflite_files["ok"].read_bytes()
    truncated.write_bytes(whole[: len(whole) // 3])
    result = validate(run_cli, truncated, tflite_files)
    assert result.exit_code == 2, result.stderr
    assert "unexpected" not in result.stderr


def test_a_hugging_face_model_type_transformers_does_not_know_is_exit_3(run_cli, tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "madeup"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "edgeward-madeup", "hidden_size": 4,
                                                    "architectures": ["EdgewardMadeupModel"]}))
    save_file({"weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    result = run_cli("export", folder, "--to", "onnx", "-o", tmp_path / "out")
    assert result.exit_code == 3, result.stderr
    assert "does not recognize this architecture" in result.stderr
    assert not (tmp_path / "out").exists()


def image_folder(root: Path) -> Path:
    from PIL import Image

    (root / "images" / "0").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(root / "images" / "0" / "a.png")
    return root / "images"


def test_preprocessor_configs_edgeward_cannot_read_or_that_are_broken(run_cli, files, tmp_path):
    images = image_folder(tmp_path)
    preprocessor = tmp_path / "preprocessor"
    preprocessor.mkdir()
    config = preprocessor / "preprocessor_config.json"
    data = f"{images}?preprocessor={preprocessor}"

    config.write_text(json.dumps({"size": {"longest_edge": 8}}))  # valid for transformers, not read here
    unsupported = run_cli("validate", files["ok"], "--reference", files["ok"], "--data", data)
    assert unsupported.exit_code == 3, unsupported.stderr
    assert "longest_edge" in unsupported.stderr and "size=" in unsupported.stderr

    config.write_text("[1, 2]")  # JSON, but not a configuration
    broken = run_cli("validate", files["ok"], "--reference", files["ok"], "--data", data)
    assert broken.exit_code == 2, broken.stderr
    assert "not an image processor configuration" in broken.stderr


def test_a_broken_tokenizer_folder_is_exit_2_not_unexpected(run_cli, files, tmp_path):
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "config.json").write_text("[1]")
    (folder / "tokenizer_config.json").write_text("[1]")
    text = tmp_path / "reviews.jsonl"
    text.write_text(json.dumps({"text": "a good film"}) + "\n")
    result = run_cli("validate", files["ok"], "--reference", files["ok"], "--data", f"{text}?preprocessor={folder}")
    assert result.exit_code == 2, result.stderr
    assert "no tokenizer Edgeward can load" in result.stderr and "unexpected" not in result.stderr


def test_a_manifest_that_is_not_an_object_is_exit_2(run_cli, files, tmp_path):
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.onnx").write_bytes(files["ok"].read_bytes())
    (artifact / "manifest.json").write_text("[]")
    result = validate(run_cli, artifact, files)
    assert result.exit_code == 2, result.stderr
    assert "not an Edgeward manifest" in result.stderr


@pytest.mark.parametrize("flags, data, said", [
    (("--image-size", "8"), "npz", "--image-size would be ignored for"),
    (("--text-field", "review", "--mean", "0.5"), "npz", "--text-field, --mean would be ignored for"),
    (("--max-length", "8"), "images", "images data does not read it (it applies to text"),
])
def test_data_flags_that_no_data_reads_are_refused(run_cli, files, tmp_path, flags, data, said):
    spec = files["data"] if data == "npz" else image_folder(tmp_path)
    result = run_cli("validate", files["ok"], "--reference", files["ok"], "--data", spec, *flags)
    assert result.exit_code == 2, result.stderr
    assert said in result.stderr
    written = run_cli("validate", files["ok"], "--reference", files["ok"], "--data", f"{files['data']}?size=8")
    assert written.exit_code == 2 and "do not apply to npz data" in written.stderr


def test_data_flags_apply_when_one_of_the_specs_reads_them(tmp_path):
    """quantize: --image-size is for the image-folder calibration; the .npz accuracy data is left as is."""
    from toolkit.commands.data_options import check_used
    from toolkit.errors import BadInput

    images = image_folder(tmp_path)
    npz = tmp_path / "eval.npz"
    np.savez(npz, x=np.zeros((1, 1, 8, 8), np.float32))
    check_used({"size": "8", "layout": None}, str(images), str(npz))  # no error
    with pytest.raises(BadInput, match="--image-size would be ignored for"):
        check_used({"size": "8"}, str(npz), "builtin:digits:test")
