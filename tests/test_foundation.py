"""The foundation: CLI start-up, global flags, artifact writes, builtin models, data, runtimes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from toolkit import artifacts
from toolkit.errors import BadInput


def test_help_imports_no_heavy_library():
    # how fast --help starts is measured in benchmarks/bench_startup.py, against bare Python
    code = (
        "import sys; from toolkit.cli import main; "
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
        "print([m for m in ('torch','onnxruntime','onnx','numpy','ai_edge_litert','ray') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_and_unknown_command(run_cli):
    result = run_cli("--version")
    assert result.exit_code == 0 and "0.1.0" in result.stdout
    result = run_cli("no-such-command")
    assert result.exit_code == 2


def test_global_flags_lifted_from_anywhere():
    from toolkit.cli import _lift_global_flags

    kept, output = _lift_global_flags(["export", "x", "--json", "-v", "--", "--json"])
    assert kept == ["export", "x", "--", "--json"]
    assert output.json and output.verbose == 1


def test_staged_folder_swaps_in_only_on_success(tmp_path):
    out = tmp_path / "art"
    with artifacts.staged_folder(out) as stage:
        (stage / "model.onnx").write_bytes(b"new")
    assert (out / "model.onnx").read_bytes() == b"new"
    with pytest.raises(BadInput, match="--force"):
        with artifacts.staged_folder(out):
            pass
    with pytest.raises(RuntimeError):
        with artifacts.staged_folder(out, force=True) as stage:
            (stage / "model.onnx").write_bytes(b"half")
            raise RuntimeError("boom")
    assert (out / "model.onnx").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]
    with artifacts.staged_folder(out, force=True) as stage:
        (stage / "model.onnx").write_bytes(b"newer")
    assert (out / "model.onnx").read_bytes() == b"newer"


def test_manifest_round_trip_and_resolve(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    manifest = artifacts.new_manifest("export", tmp_path, source={"spec": "s"}, options={"opset": 18})
    artifacts.write_manifest(tmp_path, manifest)
    assert artifacts.read_manifest(tmp_path)["files"]["model.onnx"]["bytes"] == 1
    assert artifacts.resolve_model(tmp_path) == tmp_path / "model.onnx"
    artifacts.update_manifest(tmp_path, validation={"passed": True})
    assert json.loads((tmp_path / "manifest.json").read_text())["validation"]["passed"] is True
    with pytest.raises(BadInput):
        artifacts.resolve_model(tmp_path / "missing.onnx")


def test_builtin_cnn_reaches_97_percent_and_is_cached(digits_cnn):
    from toolkit.data import digits_split
    from toolkit.models.digits import accuracy, load_builtin
    from toolkit.paths import cache_dir

    _, x_test, _, y_test = digits_split()
    assert x_test.shape[1:] == (1, 8, 8) and x_test.dtype == np.float32
    assert 0.0 <= x_test.min() and x_test.max() <= 1.0
    assert accuracy(digits_cnn, x_test, y_test) >= 0.97
    weights = cache_dir() / "builtin-digits-cnn-v1.safetensors"
    assert weights.is_file()
    written = weights.stat().st_mtime_ns
    again = load_builtin("digits-cnn")
    assert weights.stat().st_mtime_ns == written  # read from the cache, not trained again
    assert accuracy(again, x_test, y_test) == accuracy(digits_cnn, x_test, y_test)


def test_data_specs_and_bad_data(tmp_path):
    from toolkit.data import load_data

    train, test = load_data("builtin:digits:train"), load_data("builtin:digits:test")
    assert len(train) == 1347 and len(test) == 450
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 8, 8), np.float32), labels=np.arange(3))
    with pytest.raises(BadInput, match="labels"):
        load_data(tmp_path / "d.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInput):
        load_data(tmp_path / "bad.npz")
    with pytest.raises(BadInput):
        load_data("builtin:imagenet")


def test_onnx_and_tflite_runners_agree_with_torch(digits_cnn, digits_cnn_onnx, digits_cnn_tflite, digits_test):
    import torch

    from toolkit.runtime import open_model, run_batched

    with torch.no_grad():
        expected = digits_cnn(torch.as_tensor(digits_test.inputs["x"])).numpy()
    for path in (digits_cnn_onnx, digits_cnn_tflite):
        runner = open_model(path)
        data = digits_test.renamed([s.name for s in runner.inputs])
        (logits,) = run_batched(runner, data.inputs)
        assert np.abs(logits - expected).max() <= 1e-4


def test_runtime_refuses_garbage_and_escaping_external_data(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from toolkit.runtime import open_model

    (tmp_path / "junk.onnx").write_bytes(os.urandom(64))
    with pytest.raises(BadInput):
        open_model(tmp_path / "junk.onnx")
    (tmp_path / "junk.tflite").write_bytes(b"\x18\0\0\0TFL3")
    with pytest.raises(BadInput):
        open_model(tmp_path / "junk.tflite")
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    weight.data_location = TensorProto.EXTERNAL
    del weight.float_data[:]
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../x"
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "w"], ["b"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph), tmp_path / "escape.onnx")
    with pytest.raises(BadInput, match="leaves the model's folder"):
        open_model(tmp_path / "escape.onnx")
