"""`edgeward export` on the builtin digits models, and every bad input it must refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.runtime import open_model, run_batched


def torch_logits(module, x):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("to", ["onnx", "tflite"])
def test_digits_cnn_export_matches_pytorch_on_the_test_split(to, tmp_path, run_cli, digits_cnn, digits_test):
    out = tmp_path / f"cnn-{to}"
    result = run_cli("--json", "export", "builtin:digits-cnn", "--to", to, "-o", out, "--data", "builtin:digits:test")
    assert result.exit_code == 0, result.stderr
    report = result.json()  # stdout is clean JSON: the converters' chatter went elsewhere
    model = out / f"model.{to}"
    assert report["model_path"] == str(model) and model.is_file()
    assert report["size_bytes"] == model.stat().st_size

    x = digits_test.inputs["x"]
    expected = torch_logits(digits_cnn, x)
    got = run_batched(open_model(model), {"x": x})[0]
    error = float(np.abs(got - expected).max())
    assert error <= 1e-4
    assert float((got.argmax(1) == digits_test.labels).mean()) >= 0.97

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "export" and manifest["format"] == to and manifest["model_file"] == model.name
    assert manifest["files"][model.name]["bytes"] == model.stat().st_size
    assert manifest["source"]["spec"] == "builtin:digits-cnn" and len(manifest["source"]["weights_sha256"]) == 64
    recorded = manifest["export_error"]
    assert recorded["data_examples"] == len(x) and recorded["data_name"] == "builtin:digits:test"
    assert recorded["max_abs_error"] == pytest.approx(error, abs=2e-6) and recorded["max_abs_error"] <= 1e-4
    assert manifest["inputs"] == [{"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert "torch" in manifest["libraries"] and report["max_abs_error"] == recorded["max_abs_error"]


@pytest.mark.slow
def test_digits_mlp_exports_and_dynamic_batch(tmp_path, run_cli, digits_test):
    from toolkit.export import export
    from toolkit.models.digits import load_builtin

    x = digits_test.inputs["x"]
    expected = torch_logits(load_builtin("digits-mlp"), x)
    onnx_result = export("builtin:digits-mlp", "onnx", tmp_path / "mlp-onnx", dynamic_batch=True)
    runner = open_model(onnx_result.model_path)
    assert runner.inputs[0].shape[0] == "batch"
    assert np.abs(runner.run({"x": x})[0] - expected).max() <= 1e-4  # the whole split in one batch
    result = run_cli("export", "builtin:digits-mlp", "--to", "tflite", "-o", tmp_path / "mlp-tflite")
    assert result.exit_code == 0, result.stderr
    assert "max abs error" in result.stdout and "KiB" in result.stdout
    got = run_batched(open_model(tmp_path / "mlp-tflite"), {"x": x})[0]
    assert np.abs(got - expected).max() <= 1e-4


def test_default_output_folder_and_no_overwrite_without_force(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run_cli("export", "builtin:digits-mlp", "--to", "onnx")
    assert first.exit_code == 0, first.stderr
    folder = tmp_path / "exported" / "digits-mlp-onnx"
    before = (folder / "model.onnx").read_bytes(), (folder / "manifest.json").read_text()
    again = run_cli("export", "builtin:digits-mlp", "--to", "onnx")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert again.stderr.strip().count("\n") == 0
    assert ((folder / "model.onnx").read_bytes(), (folder / "manifest.json").read_text()) == before
    forced = run_cli("export", "builtin:digits-mlp", "--to", "onnx", "--force", "--opset", "17")
    assert forced.exit_code == 0, forced.stderr
    assert json.loads((folder / "manifest.json").read_text())["options"]["opset"] == 17
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["digits-mlp-onnx"]


def test_unconvertible_op_exits_3_naming_op_and_node_and_leaves_nothing(tmp_path, run_cli):
    from onnx import helper
    from test_sources import third_party_onnx

    cumsum = helper.make_node("CumSum", ["score", "zero"], ["running"], name="running_total")
    model = third_party_onnx(tmp_path / "odd.onnx", extra_node=cumsum)
    out = tmp_path / "odd-tflite"
    result = run_cli("export", model, "--to", "tflite", "-o", out)
    assert result.exit_code == 3
    assert "CumSum" in result.stderr and "running_total" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.onnx"]  # no folder, no staging leftovers


def test_failed_export_keeps_the_existing_artifact(tmp_path, run_cli):
    from onnx import helper
    from test_sources import third_party_onnx

    out = tmp_path / "art"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"the old artifact")
    cumsum = helper.make_node("CumSum", ["score", "zero"], ["running"], name="running_total")
    model = third_party_onnx(tmp_path / "odd.onnx", extra_node=cumsum)
    result = run_cli("export", model, "--to", "tflite", "-o", out, "--force")
    assert result.exit_code == 3
    assert (out / "model.tflite").read_bytes() == b"the old artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "odd.onnx"]


def bad_sources(tmp_path, digits_cnn_onnx, digits_cnn_tflite):
    import torch
    from test_sources import evil_pickle

    (tmp_path / "notes.txt").write_text("not a model\n")
    (tmp_path / "fake.onnx").write_text("not a model either\n")
    (tmp_path / "cut.onnx").write_bytes(digits_cnn_onnx.read_bytes()[:3000])
    (tmp_path / "cut.tflite").write_bytes(digits_cnn_tflite.read_bytes()[:20000])
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(tmp_path / "script.pt"))
    evil_pickle(tmp_path / "evil.pt", tmp_path / "canary")
    return {
        "missing": ([tmp_path / "nowhere.onnx"], "no such file"),
        "not a model": ([tmp_path / "notes.txt"], "not a model file"),
        "fake onnx": ([tmp_path / "fake.onnx"], "not a readable ONNX model"),
        "truncated onnx": ([tmp_path / "cut.onnx"], "not a readable ONNX model"),
        "truncated tflite": ([tmp_path / "cut.tflite"], "cannot load it|not a valid TFLite model"),
        "pickle": ([tmp_path / "evil.pt"], "refused: .*pickled.*safetensors"),
        "torchscript": ([tmp_path / "script.pt"], "--trust-torchscript"),
        "unknown builtin": (["builtin:resnet"], "unknown builtin model"),
        "bad shape": (["builtin:digits-cnn", "--input-shape", "x=1x1x9x8"], "does not fit its fixed shape"),
        "wrong data": (["builtin:digits-cnn", "--data", "nope.csv"], "unknown data"),
        "bad opset": (["builtin:digits-cnn", "--opset", "99"], "opset"),
    }


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, run_cli, digits_cnn_onnx, digits_cnn_tflite):
    import re

    cases = bad_sources(tmp_path, digits_cnn_onnx, digits_cnn_tflite)
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, (args, message) in cases.items():
        result = run_cli("export", *args, "--to", "onnx", "-o", tmp_path / "out")
        assert result.exit_code == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert re.search(message, lines[0]), (name, lines[0])
        assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, the canary included
    assert not (tmp_path / "canary").exists()


@pytest.mark.slow
def test_malicious_pickle_through_a_real_process_writes_nothing(tmp_path):
    from conftest import edgeward_process
    from test_sources import evil_pickle

    canary = tmp_path / "canary"
    evil = evil_pickle(tmp_path / "model.pth", canary)
    result = edgeward_process("export", evil, "--to", "tflite", "-o", tmp_path / "out", timeout=300)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "refused" in result.stderr and "safetensors" in result.stderr
    assert not canary.exists() and not (tmp_path / "out").exists()


def test_external_data_escape_through_the_cli(tmp_path, run_cli):
    from onnx import TensorProto, helper

    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    result = run_cli("export", tmp_path / "model" / "model.onnx", "--to", "onnx", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "leaves the model's folder" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_far_from_its_source_is_measured_and_warned(digits_cnn_onnx, digits_test):
    import torch

    from toolkit.export import measure_error, warn_if_far
    from toolkit.sources import load_source

    source = load_source("builtin:digits-cnn")
    same = measure_error(source, open_model(digits_cnn_onnx), digits_test)
    assert same["max_abs_error"] <= 1e-4 and not warn_if_far(same, "onnx")
    with torch.no_grad():
        source.module[0].bias += 0.01  # a real change to the reference: the ONNX file no longer matches
    far = measure_error(source, open_model(digits_cnn_onnx), digits_test)
    assert far["data"] > 1e-3 and far["data_examples"] == len(digits_test)
    from toolkit.errors import EdgewardWarning

    with pytest.warns(EdgewardWarning, match="differs from its source"):
        assert warn_if_far(far, "onnx")
