"""Bad input to `edgeward validate` (one line, exit 2, nothing written) and `--shapes`."""

from __future__ import annotations

import numpy as np
import pytest


def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def variants(tmp_path_factory, digits_cnn_onnx):
    """The float CNN with one more output, and with its logits cut to 9 classes."""
    import onnx
    from onnx import helper

    root = tmp_path_factory.mktemp("variants")
    two = onnx.load(str(digits_cnn_onnx))
    two.graph.output.append(onnx.ValueInfoProto(name="relu_2"))
    onnx.save(two, str(root / "two_outputs.onnx"))

    nine = onnx.load(str(digits_cnn_onnx))
    old = nine.graph.output[0].name
    for node in nine.graph.node:
        node.output[:] = [f"{old}_full" if name == old else name for name in node.output]
    for name, value in (("starts", [0]), ("ends", [9]), ("axes", [1])):
        nine.graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [1], value))
    nine.graph.node.append(helper.make_node("Slice", [f"{old}_full", "starts", "ends", "axes"], [old]))
    del nine.graph.output[0].type.tensor_type.shape.dim[:]
    onnx.save(nine, str(root / "nine_classes.onnx"))
    return root


def _bad(run_cli, tmp_path, *args):
    out = tmp_path / "never"
    result = run_cli("validate", *map(str, args), "-o", out)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    return lines[0]


def test_data_that_fits_neither_model(run_cli, tmp_path, digits_cnn_onnx, digits_test):
    x = digits_test.inputs["x"][:20]
    ref = digits_cnn_onnx
    names = _save_npz(tmp_path / "names.npz", a=x, b=x)
    assert "needs ['x']" in _bad(run_cli, tmp_path, ref, "--reference", ref, "--data", names)
    shape = _save_npz(tmp_path / "shape.npz", x=np.zeros((20, 1, 7, 7), np.float32))
    assert "wants shape" in _bad(run_cli, tmp_path, ref, "--reference", ref, "--data", shape)
    rank = _save_npz(tmp_path / "rank.npz", x=x.reshape(20, 64))
    assert "rank" in _bad(run_cli, tmp_path, ref, "--reference", ref, "--data", rank)
    dtype = _save_npz(tmp_path / "dtype.npz", x=(x * 16).astype(np.int64))
    assert "float32" in _bad(run_cli, tmp_path, ref, "--reference", ref, "--data", dtype)


def test_different_output_counts_and_shapes(run_cli, tmp_path, variants, digits_cnn_onnx):
    line = _bad(run_cli, tmp_path, variants / "two_outputs.onnx", "--reference", digits_cnn_onnx,
                "--data", "builtin:digits:test")
    assert "2 outputs" in line and "1 (logits)" in line
    line = _bad(run_cli, tmp_path, variants / "nine_classes.onnx", "--reference", digits_cnn_onnx,
                "--data", "builtin:digits:test")
    assert "'logits'" in line and "[450, 9]" in line and "[450, 10]" in line


def test_labels_that_do_not_fit(run_cli, tmp_path, digits_cnn_onnx, digits_test):
    x, y = digits_test.inputs["x"][:20], digits_test.labels[:20]
    short = _save_npz(tmp_path / "short.npz", x=x, labels=y[:19])
    assert "19 labels but 20 examples" in _bad(run_cli, tmp_path, digits_cnn_onnx, "--reference", digits_cnn_onnx,
                                               "--data", short)
    wrong = _save_npz(tmp_path / "wrong.npz", x=x, labels=np.zeros((20, 3), np.int64))
    assert "fit no classification output" in _bad(run_cli, tmp_path, digits_cnn_onnx, "--reference",
                                                 digits_cnn_onnx, "--data", wrong)

    from toolkit.data import Dataset
    from toolkit.errors import BadInput
    from toolkit.validate import validate

    with pytest.raises(BadInput, match="19 labels but 20 examples"):
        validate(digits_cnn_onnx, digits_cnn_onnx, Dataset({"x": x}, y[:19], "mine"))


@pytest.mark.parametrize("option,value", [
    ("--max-drop", "-1"), ("--max-drop", "101"), ("--min-agreement", "1.5"), ("--min-agreement", "-0.1"),
    ("--min-sqnr", "nan"), ("--min-sqnr", "500"), ("--top", "0"), ("--batch-size", "0"),
    ("--shapes", "x=0x1x8x8"), ("--shapes", "x=two"), ("--shapes", "nope=1x1x8x8"),
])
def test_gate_and_option_values_out_of_range(option, value, run_cli, tmp_path, digits_cnn_onnx):
    line = _bad(run_cli, tmp_path, digits_cnn_onnx, "--reference", digits_cnn_onnx, "--data", "builtin:digits:test",
                option, value)
    assert option.lstrip("-").split("-")[0] in line


def test_missing_models(run_cli, tmp_path, digits_cnn_onnx):
    assert "candidate" in _bad(run_cli, tmp_path, tmp_path / "none.onnx", "--reference", digits_cnn_onnx,
                               "--data", "builtin:digits:test")
    assert "reference" in _bad(run_cli, tmp_path, digits_cnn_onnx, "--reference", tmp_path / "none.onnx",
                               "--data", "builtin:digits:test")


@pytest.fixture(scope="module")
def sequence_models(tmp_path_factory):
    """A mean-pooling sequence classifier exported twice: length dynamic, and traced at 16."""
    import torch

    class Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed = torch.nn.Embedding(50, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, ids):
            return self.head(self.embed(ids).mean(dim=1))

    root = tmp_path_factory.mktemp("seq")
    model = Pool().eval()
    example = (torch.randint(0, 50, (2, 16)),)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    for name, shapes in (("dynamic", ({0: batch, 1: length},)), ("fixed16", ({0: batch},))):
        torch.onnx.export(model, example, str(root / f"{name}.onnx"), dynamo=True, external_data=False,
                          input_names=["ids"], output_names=["logits"], dynamic_shapes=shapes, verbose=False)
    rng = np.random.default_rng(1)
    np.savez(root / "data.npz", ids=rng.integers(0, 50, (40, 16)).astype(np.int64))
    return root


def test_shapes_catch_a_model_traced_at_one_length(sequence_models, run_cli):
    root = sequence_models
    common = ("validate", root / "fixed16.onnx", "--reference", root / "dynamic.onnx", "--data", root / "data.npz")
    assert run_cli(*common).exit_code == 0  # at the data's length the two agree
    result = run_cli("--json", *common, "--shapes", "ids=2x16,2x8")
    assert result.exit_code == 1
    report = result.json()
    checks = {tuple(check["shapes"]["ids"]): check for check in report["shape_checks"]}
    assert checks[(2, 16)]["ran"] and not checks[(2, 8)]["ran"]
    assert "runs at ids=2x8" in result.stderr
    # the dynamic model runs at both lengths against itself
    assert run_cli("validate", root / "dynamic.onnx", "--reference", root / "dynamic.onnx", "--data",
                   root / "data.npz", "--shapes", "ids=2x16,3x8").exit_code == 0
