"""Model sources: signature detection for every kind, shape pinning, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.errors import BadInput
from toolkit.runtime import TensorSpec
from toolkit.sources import load_source, parse_input_shapes, resolve_shapes


def third_party_onnx(path, *, extra_node=None):
    """An ONNX file as other exporters write them: symbolic batch/seq, an int64 scalar, a state tensor."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("proj", TensorProto.FLOAT, [16, 16], np.eye(16, dtype=np.float32).ravel() * 0.5)
    nodes = [
        helper.make_node("ReduceMean", ["audio"], ["level"], name="mean", axes=[1], keepdims=1),  # [b,1]
        helper.make_node("Cast", ["sr"], ["sr_f"], name="cast_sr", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["level", "sr_f"], ["scaled"], name="scale"),  # [b,1]
        helper.make_node("MatMul", ["state", "proj"], ["projected"], name="project"),  # [2,b,16]
        helper.make_node("Tanh", ["projected"], ["new_state"], name="squash"),
        helper.make_node("Unsqueeze", ["scaled", "zero"], ["scaled3"], name="lift"),  # [1,b,1]
        helper.make_node("Add", ["new_state", "scaled3"], ["mixed"], name="mix"),
        helper.make_node("ReduceMean", ["mixed"], ["score"], name="score", axes=[0, 2], keepdims=0),  # [b]
    ]
    if extra_node:
        nodes.append(extra_node)
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(
        nodes, "third_party",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "sequence"]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 16]),
        ],
        [
            helper.make_tensor_value_info(extra_node.output[0] if extra_node else "score", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, "batch", 16]),
        ],
        [weight, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="elsewhere")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_builtin_signature_and_runner(digits_test):
    source = load_source("builtin:digits-cnn")
    assert source.kind == "builtin" and source.name == "digits-cnn"
    assert source.inputs == [TensorSpec("x", ["batch", 1, 8, 8], "float32")]
    assert source.shapes() == {"x": [1, 1, 8, 8]}
    example = source.example_inputs(batch=3)
    assert example["x"].shape == (3, 1, 8, 8) and example["x"].dtype == np.float32
    runner = source.runner()
    assert runner.format == "torch" and [o.name for o in runner.outputs] == ["logits"]
    logits = runner.run({"x": digits_test.inputs["x"]})[0]
    accuracy = float((logits.argmax(1) == digits_test.labels).mean())
    assert accuracy >= 0.97
    assert load_source("builtin:digits-mlp").runner().run({"x": digits_test.inputs["x"][:5]})[0].shape == (5, 10)


def test_third_party_onnx_signature_is_detected(tmp_path):
    source = load_source(third_party_onnx(tmp_path / "vad.onnx"))
    assert source.kind == "onnx"
    assert [(s.name, s.shape, s.dtype) for s in source.inputs] == [
        ("audio", ["batch", "sequence"], "float32"),
        ("sr", [], "int64"),
        ("state", [2, "batch", 16], "float32"),
    ]
    assert [s.name for s in source.outputs] == ["score", "new_state"]
    # batch 1 and sequence 128 by default; pinning one input binds the shared symbol in the others
    assert source.shapes() == {"audio": [1, 128], "sr": [], "state": [2, 1, 16]}
    pinned = load_source(tmp_path / "vad.onnx", input_shapes={"audio": [4, 512]})
    assert pinned.shapes() == {"audio": [4, 512], "sr": [], "state": [2, 4, 16]}
    feeds = pinned.example_inputs()
    assert feeds["sr"].dtype == np.int64 and feeds["sr"].shape == () and 0 <= feeds["sr"] < 10
    outputs = pinned.runner().run(feeds)
    assert outputs[0].shape == (4,) and outputs[1].shape == (2, 4, 16)
    expected = np.tanh(feeds["state"] @ (np.eye(16, dtype=np.float32) * 0.5))
    assert np.allclose(outputs[1], expected, atol=1e-6)


def test_input_shape_parsing_and_errors(tmp_path):
    assert parse_input_shapes(["x=1x3x224x224", "ids=1,128", "sr=scalar", "2x4"]) == {
        "x": [1, 3, 224, 224], "ids": [1, 128], "sr": [], "": [2, 4]}
    for bad in ("x=", "x=1xax3", "x=0x3", "x=-1x3"):
        with pytest.raises(BadInput, match="--input-shape"):
            parse_input_shapes([bad])
    specs = [TensorSpec("x", ["batch", 3, "height", "width"], "float32")]
    with pytest.raises(BadInput, match=r"dynamic dimension height at axis 2: pin it with --input-shape x=1x3x1x1"):
        resolve_shapes(specs, {})
    assert resolve_shapes(specs, {"": [2, 3, 32, 32]}) == {"x": [2, 3, 32, 32]}
    with pytest.raises(BadInput, match="does not fit its fixed shape"):
        resolve_shapes(specs, {"x": [1, 4, 32, 32]})
    with pytest.raises(BadInput, match="model's inputs are"):
        load_source("builtin:digits-cnn", input_shapes={"image": [1, 1, 8, 8]})


def test_tflite_source(digits_cnn_tflite):
    source = load_source(digits_cnn_tflite)
    assert source.kind == "tflite" and source.inputs[0].shape == [1, 1, 8, 8]
    assert source.runner().format == "tflite"


def test_pt2_source_keeps_symbolic_batch(tmp_path):
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    source = load_source(tmp_path / "net.pt2")
    assert source.kind == "pt2"
    (spec,) = source.inputs
    assert spec.dtype == "float32" and isinstance(spec.shape[0], str) and spec.shape[1] == 4
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(source.runner().run({spec.name: x})[0], expected, atol=1e-6)


def write_factory_package(root):
    package = root / "edgeward_test_nets"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "import torch\n\n"
        "def make_net(width=8):\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, 2))\n\n"
        "def make_declared():\n"
        "    net = make_net()\n"
        "    net.input_specs = [{'name': 'features', 'shape': ['batch', 6], 'dtype': 'float32'}]\n"
        "    return net\n"
    )
    return "edgeward_test_nets.nets"


def test_factory_source_with_weights(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    monkeypatch.syspath_prepend(str(tmp_path))
    module_name = write_factory_package(tmp_path)
    with pytest.raises(BadInput, match="--input-shape input=1x3x224x224"):
        load_source(f"{module_name}:make_net")
    trained = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "net.safetensors"))
    source = load_source(f"{module_name}:make_net", weights=str(tmp_path / "net.safetensors"),
                         input_shapes={"": [3, 6]})
    assert source.kind == "factory" and source.inputs == [TensorSpec("input", [3, 6], "float32")]
    x = source.example_inputs()["input"]
    assert np.allclose(source.runner().run({"input": x})[0], trained(torch.from_numpy(x)).detach().numpy(), atol=1e-6)
    declared = load_source(f"{module_name}:make_declared")
    assert declared.inputs == [TensorSpec("features", ["batch", 6], "float32")]
    with pytest.raises(BadInput, match="no such weights file"):
        load_source(f"{module_name}:make_net", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(BadInput, match="cannot import"):
        load_source("edgeward_no_such_pkg.nets:make_net")


def test_hf_folder_signature(tiny_bert):
    source = load_source(tiny_bert)
    assert source.kind == "hf" and source.meta["task"] == "text-classification"
    assert [(s.name, s.dtype) for s in source.inputs] == [
        ("input_ids", "int64"), ("attention_mask", "int64"), ("token_type_ids", "int64")]
    feeds = source.example_inputs()
    assert feeds["input_ids"].shape == (1, 128) and feeds["input_ids"].max() < 100
    assert (feeds["attention_mask"] == 1).all()
    (logits,) = source.runner().run(feeds)
    assert logits.shape == (1, 2) and np.isfinite(logits).all()


def test_hf_folder_with_remote_code_or_pickles_is_refused(tiny_bert, tmp_path):
    import json
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_bert, folder)
    (folder / "modeling_evil.py").write_text("raise SystemExit('ran remote code')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match=r"modeling_evil\.py.*--trust-remote-code"):
        load_source(folder)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_bert, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(BadInput, match="pickle"):
        load_source(pickled)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


def make_tiny_bert(folder):
    """A BERT classifier from a config (no download), saved as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=100)
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.mark.parametrize("kind", ["missing", "text", "fake-onnx", "truncated-onnx", "truncated-tflite", "safetensors"])
def test_bad_files_are_refused_with_one_line(kind, tmp_path, digits_cnn_onnx, digits_cnn_tflite):
    path = {
        "missing": tmp_path / "nowhere.onnx",
        "text": tmp_path / "notes.txt",
        "fake-onnx": tmp_path / "fake.onnx",
        "truncated-onnx": tmp_path / "cut.onnx",
        "truncated-tflite": tmp_path / "cut.tflite",
        "safetensors": tmp_path / "w.safetensors",
    }[kind]
    if kind in ("text", "fake-onnx", "safetensors"):
        path.write_text("hello, I am not a model\n")
    elif kind == "truncated-onnx":
        path.write_bytes(digits_cnn_onnx.read_bytes()[:3000])
    elif kind == "truncated-tflite":
        path.write_bytes(digits_cnn_tflite.read_bytes()[:20000])
    with pytest.raises(BadInput) as caught:
        load_source(path)
    assert "\n" not in str(caught.value) and str(path.name) in str(caught.value)


def evil_pickle(path, canary):
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    path.write_bytes(pickle.dumps({"state_dict": Payload()}))
    return path


def test_pickles_are_refused_without_being_opened(tmp_path):
    import torch

    canary = tmp_path / "canary"
    for name in ("model.pt", "model.pth", "weights.bin", "model.ckpt"):
        with pytest.raises(BadInput, match="refused: .*pickled PyTorch checkpoint.*safetensors"):
            load_source(evil_pickle(tmp_path / name, canary))
    torch.save({"w": torch.zeros(2)}, str(tmp_path / "zip.pt"))  # torch.save's zip format is pickle too
    with pytest.raises(BadInput, match="pickled"):
        load_source(tmp_path / "zip.pt")
    assert not canary.exists()


def test_torchscript_needs_the_opt_in(tmp_path):
    import torch

    path = tmp_path / "script.pt"
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(path))
    with pytest.raises(BadInput, match="TorchScript, which is executable code: pass --trust-torchscript"):
        load_source(path)
    with pytest.raises(BadInput, match="--input-shape input="):
        load_source(path, trust_torchscript=True)
    source = load_source(path, trust_torchscript=True, input_shapes={"input": [2, 4]})
    assert source.kind == "torchscript" and source.runner().run(source.example_inputs())[0].shape == (2, 2)


def test_external_data_outside_the_folder_is_refused(tmp_path):
    import onnx
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
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(BadInput, match="refused: external data location '../secret.bin' leaves"):
        load_source(folder / "model.onnx")
    assert onnx  # imported for the helper


def test_artifact_folder_with_a_rebuild_record(tmp_path, digits_test):
    from safetensors.torch import save_file

    from toolkit.artifacts import new_manifest, write_manifest
    from toolkit.models.digits import DigitsConfig, build, train

    folder = tmp_path / "student"
    folder.mkdir()
    student = build(DigitsConfig("digits-mlp", width=0.25))
    x_train = digits_test.inputs["x"]
    train(student, x_train, digits_test.labels, epochs=2)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(folder / "model.safetensors"))
    write_manifest(folder, new_manifest("distill", folder, source={"spec": "test"}, options={},
                                        rebuild={"kind": "digits", "family": "digits-mlp", "width": 0.25}))
    source = load_source(folder)
    assert source.kind == "artifact" and source.inputs[0].name == "x"
    assert source.meta["rebuild"]["width"] == 0.25
    import torch

    expected = student(torch.from_numpy(x_train[:4])).detach().numpy()
    assert np.allclose(source.runner().run({"x": x_train[:4]})[0], expected, atol=1e-6)
