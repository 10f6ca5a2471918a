"""Export from every other source kind: .pt2, factory + weights, TorchScript, third-party ONNX, HF folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.export import export
from toolkit.runtime import open_model


@pytest.mark.slow
def test_pt2_to_onnx_with_dynamic_batch_and_to_tflite(tmp_path):
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 3)).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    x = np.random.default_rng(1).random((6, 4), dtype=np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()

    onnx_result = export(tmp_path / "net.pt2", "onnx", tmp_path / "onnx", dynamic_batch=True)
    runner = open_model(onnx_result.model_path)
    assert isinstance(runner.inputs[0].shape[0], str)
    assert np.abs(runner.run({runner.inputs[0].name: x})[0] - expected).max() <= 1e-5
    assert onnx_result.max_abs_error <= 1e-5

    tflite_result = export(tmp_path / "net.pt2", "tflite", tmp_path / "tflite")
    assert tflite_result.max_abs_error <= 1e-5
    assert open_model(tflite_result.model_path).run({"x": x[:1]})[0].shape == (1, 3)


def test_factory_with_weights_exports_and_records_the_rebuild(tmp_path, monkeypatch, run_cli):
    import torch
    from safetensors.torch import save_file
    from test_sources import write_factory_package

    monkeypatch.syspath_prepend(str(tmp_path))
    module_name = write_factory_package(tmp_path)
    torch.manual_seed(3)
    trained = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    weights = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(weights))
    out = tmp_path / "net-tflite"
    result = run_cli("--json", "export", f"{module_name}:make_net", "--weights", weights, "--input-shape", "input=1x6",
                     "--to", "tflite", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.json()["max_abs_error"] <= 1e-5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_rebuild"] == {"kind": "factory", "factory": f"{module_name}:make_net"}
    assert manifest["source"]["kind"] == "factory" and len(manifest["source"]["weights_sha256"]) == 64
    x = np.random.default_rng(2).random((1, 6), dtype=np.float32)
    got = open_model(out).run({"input": x})[0]
    assert np.abs(got - trained(torch.from_numpy(x)).detach().numpy()).max() <= 1e-5


def test_torchscript_with_opt_in_exports_to_both_formats(tmp_path, run_cli):
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)).eval()
    torch.jit.script(module).save(str(tmp_path / "script.pt"))
    for to in ("onnx", "tflite"):
        result = run_cli("--json", "export", tmp_path / "script.pt", "--trust-torchscript", "--input-shape", "1x4",
                         "--to", to, "-o", tmp_path / to)
        assert result.exit_code == 0, result.stderr
        assert result.json()["max_abs_error"] <= 1e-5


def test_third_party_onnx_reexports_and_converts_to_tflite(tmp_path):
    from test_sources import third_party_onnx

    model = third_party_onnx(tmp_path / "vad.onnx")
    copy = export(model, "onnx", tmp_path / "copy")
    assert copy.max_abs_error == 0.0
    assert [s["shape"] for s in copy.manifest["inputs"]] == [["batch", "sequence"], [], [2, "batch", 16]]

    tflite = export(model, "tflite", tmp_path / "tflite", input_shapes={"audio": [1, 256]}, data=None)
    runner = open_model(tflite.model_path)
    assert {s.name: s.shape for s in runner.inputs} == {"audio": [1, 256], "sr": [], "state": [2, 1, 16]}
    assert tflite.max_abs_error <= 1e-4
    assert tflite.manifest["options"]["input_shapes"] == {"audio": [1, 256]}


def test_onnx_artifact_folder_to_tflite_with_real_data(tmp_path, digits_cnn_onnx, digits_test):
    from toolkit.export.onnx_to_torch import onnx_to_torch

    first = export(digits_cnn_onnx, "onnx", tmp_path / "art")
    assert first.max_abs_error == 0.0
    result = export(tmp_path / "art", "tflite", tmp_path / "art-tflite", data=digits_test)
    assert result.manifest["export_error"]["data_examples"] == len(digits_test)
    assert result.max_abs_error <= 1e-4
    assert "onnx_to_torch" in result.manifest["options"]["route"]
    assert len(list(onnx_to_torch(digits_cnn_onnx).buffers())) == 8  # weights are buffers, not constants


@pytest.mark.slow
def test_tiny_bert_exports_through_optimum_and_to_tflite(tmp_path, run_cli):
    from test_sources import make_tiny_bert

    folder = make_tiny_bert(tmp_path / "tiny-bert")
    result = run_cli("--json", "export", folder, "--to", "onnx", "-o", tmp_path / "bert-onnx")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert [i["name"] for i in report["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert report["inputs"][0]["shape"] == ["batch_size", "sequence_length"]
    assert report["max_abs_error"] <= 1e-4
    manifest = json.loads((tmp_path / "bert-onnx" / "manifest.json").read_text())
    assert manifest["options"]["route"] == "optimum.exporters.onnx.main_export"
    assert manifest["options"]["task"] == "text-classification"
    runner = open_model(tmp_path / "bert-onnx")
    ids = np.random.default_rng(0).integers(0, 100, (3, 20))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    assert runner.run(feeds)[0].shape == (3, 2)  # dynamic batch and sequence

    tflite = export(folder, "tflite", tmp_path / "bert-tflite", input_shapes={"input_ids": [1, 32]})
    assert tflite.max_abs_error <= 1e-4
    shapes = {s["name"]: s["shape"] for s in tflite.manifest["inputs"]}
    assert shapes == {"input_ids": [1, 32], "attention_mask": [1, 32], "token_type_ids": [1, 32]}
