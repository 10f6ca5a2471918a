"""`edgeward quantize --mode auto`: real tries on the digits CNN, a CNN with outliers that
breaks int8 (mixed precision), and a tiny trained BERT; every row of the table is checked
against an independent onnxruntime computation."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _accuracy(model_path, feeds, labels) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = {arg.name for arg in session.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    # in validate's batches of 256: dynamic int8 scales its activations per batch
    count = len(next(iter(feeds.values())))
    logits = np.concatenate([session.run(None, {k: v[start:start + 256] for k, v in feeds.items()})[0]
                             for start in range(0, count, 256)])
    return float((logits.argmax(-1) == labels).mean())


def check_table(out_dir, feeds, labels, max_drop) -> dict:
    """Every row of tries.json against the files it names and a fresh onnxruntime run."""
    table = json.loads((out_dir / "tries.json").read_text())
    reference = _accuracy(table["model"], feeds, labels)
    assert table["reference_accuracy"] == pytest.approx(reference)
    markdown = (out_dir / "tries.md").read_text()
    for row in table["tries"]:
        assert row["label"] in markdown
        if row["error"]:
            continue
        model = out_dir / row["folder"] / "model.onnx"
        assert row["size_bytes"] == model.stat().st_size
        accuracy = _accuracy(model, feeds, labels)
        assert abs(row["accuracy"] * 100 - accuracy * 100) < 0.1
        assert row["drop"] == pytest.approx((reference - accuracy) * 100, abs=0.01)
        assert row["passed"] == (row["drop"] <= max_drop)
        assert row["smaller"] == (row["size_bytes"] < table["float_size_bytes"])
    eligible = [row for row in table["tries"] if row["passed"] and row["smaller"]]
    if eligible:
        best = min(eligible, key=lambda row: row["size_bytes"])
        assert table["chosen"] == best["index"] and table["passed"]
        assert (out_dir / "model.onnx").read_bytes() == (out_dir / best["folder"] / "model.onnx").read_bytes()
        manifest = json.loads((out_dir / "manifest.json").read_text())
        assert manifest["auto"]["chosen"] == best["label"] and manifest["auto"]["passed"]
    return table


def test_auto_on_the_digits_cnn(digits_cnn_onnx, digits_test, run_cli, tmp_path):
    out = tmp_path / "auto"
    result = run_cli("--json", "quantize", digits_cnn_onnx, "--mode", "auto", "--data", "builtin:digits:test",
                     "--calibration", "builtin:digits:train", "-o", out)
    assert result.exit_code == 0, result.stderr
    table = check_table(out, digits_test.inputs, digits_test.labels, 1.0)
    assert table["passed"]
    assert result.json()["mode"] == table["tries"][table["chosen"]]["label"]
    sizes = [row["size_bytes"] for row in table["tries"]]
    assert min(sizes) < table["float_size_bytes"] * 0.35  # a 4- or 8-bit model was tried first
    assert table["tries"][0]["mode"] in ("int4-weight", "dynamic-int8", "static-int8")


@pytest.fixture(scope="module")
def outlier_cnn(tmp_path_factory, digits_cnn_onnx):
    """The digits CNN rewritten into an equivalent float function with outliers that int8 and
    int4 cannot represent: conv1 channel 0 x300 (activations), and the even channels of conv2
    divided by 300 with the matching Gemm weights x300 (weights). Float accuracy is unchanged."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(digits_cnn_onnx))
    inits = {init.name: init for init in model.graph.initializer}

    def update(name, change):
        array = numpy_helper.to_array(inits[name]).copy()
        change(array)
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    def scale_rows(array, rows, factor):
        array[rows] *= factor

    update("0.weight", lambda a: scale_rows(a, 0, 300.0))
    update("0.bias", lambda a: scale_rows(a, 0, 300.0))
    update("2.weight", lambda a: a.__setitem__((slice(None), 0), a[:, 0] / 300.0))
    update("2.weight", lambda a: scale_rows(a, slice(0, None, 2), 1 / 300.0))
    update("2.bias", lambda a: scale_rows(a, slice(0, None, 2), 1 / 300.0))

    def gemm(array):
        for channel in range(0, 32, 2):
            array[:, channel * 16 : (channel + 1) * 16] *= 300.0

    update("6.weight", gemm)
    path = tmp_path_factory.mktemp("outlier") / "outlier.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
def test_mixed_precision_when_no_int8_mode_passes(outlier_cnn, digits_cnn_onnx, digits_test, tmp_path):
    from toolkit.quantize.auto import auto_quantize

    x, labels = digits_test.inputs["x"], digits_test.labels
    assert _accuracy(outlier_cnn, {"x": x}, labels) == pytest.approx(_accuracy(digits_cnn_onnx, {"x": x}, labels))
    result = auto_quantize(outlier_cnn, tmp_path / "auto", data=digits_test, max_drop=0.5,
                           calibration="builtin:digits:train")
    table = check_table(tmp_path / "auto", {"x": x}, labels, 0.5)
    full_int8 = [row for row in table["tries"] if row["mode"].endswith("int8") and not row["excluded"]]
    assert full_int8 and not any(row["passed"] for row in full_int8)
    mixed = [row for row in table["tries"] if row["excluded"]]
    assert mixed, "no mixed-precision try after every int8 mode failed"
    import onnx

    float_nodes = {node.name for node in onnx.load(str(outlier_cnn)).graph.node}
    assert all(set(row["excluded"]) <= float_nodes for row in mixed)
    assert [len(row["excluded"]) for row in mixed] == sorted(len(row["excluded"]) for row in mixed)
    assert result.passed and result.model_path.is_file()
    assert mixed[-1]["passed"], "keeping the worst nodes in float should reach the gate"
    markdown = (tmp_path / "auto" / "tries.md").read_text()
    assert "Nodes kept in float:" in markdown
    for row in mixed:
        assert f"- try {row['index'] + 1}: {', '.join(row['excluded'])}" in markdown
    assert f"chosen (smallest): {result.tries[result.chosen].label}" in result.summary()


def test_nothing_passes_exit_1_and_the_tries_stay(outlier_cnn, run_cli, tmp_path):
    out = tmp_path / "auto"
    result = run_cli("quantize", outlier_cnn, "--mode", "auto", "--data", "builtin:digits:test", "--max-drop", "0.5",
                     "--budget", "0.01", "-o", out)
    assert result.exit_code == 1, result.stderr
    assert "no quantized model passed" in result.stderr
    assert "nothing passed" in result.stdout and "budget spent" in result.stdout
    table = json.loads((out / "tries.json").read_text())
    assert len(table["tries"]) == 1 and not table["passed"]
    assert (out / table["tries"][0]["folder"] / "model.onnx").is_file()
    assert (out / "tries.md").is_file()
    manifest = json.loads((out / "manifest.json").read_text())  # the best so far is kept, marked failed
    assert manifest["auto"]["passed"] is False and (out / "model.onnx").is_file()
    # the folder is not overwritten without --force
    again = run_cli("quantize", outlier_cnn, "--mode", "auto", "--data", "builtin:digits:test", "-o", out)
    assert again.exit_code == 2 and "--force" in again.stderr


def test_auto_bad_input(digits_cnn_onnx, run_cli, tmp_path):
    for args, words in ((("--max-drop", "-2"), "max-drop"), (("--min-agreement", "2"), "min-agreement"),
                        (("--budget", "0"), "budget")):
        result = run_cli("quantize", digits_cnn_onnx, "--mode", "auto", "--data", "builtin:digits:test", *args,
                         "-o", tmp_path / "never")
        assert result.exit_code == 2 and words in result.stderr
        assert not (tmp_path / "never").exists()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT (hidden 32) from a BertConfig, trained for a few steps on a synthetic task
    (the label is the first token mod 3) so its logits are decisive, exported with optimum."""
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, num_labels=3)
    model = BertForSequenceClassification(config)
    rng = np.random.default_rng(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        ids = rng.integers(0, 32, (64, 8))
        loss = model(input_ids=torch.tensor(ids), labels=torch.tensor(ids[:, 0] % 3)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    root = tmp_path_factory.mktemp("bert")
    model.eval().save_pretrained(root / "hf")
    main_export(str(root / "hf"), output=str(root / "onnx"), task="text-classification")
    ids = rng.integers(0, 32, (300, 8)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    np.savez(root / "eval.npz", **feeds, labels=ids[:, 0] % 3)
    return root, feeds, ids[:, 0] % 3


@pytest.mark.slow
def test_auto_on_a_tiny_bert(tiny_bert, run_cli, tmp_path):
    root, feeds, labels = tiny_bert
    assert _accuracy(root / "onnx" / "model.onnx", feeds, labels) > 0.9  # it learned the task
    out = tmp_path / "auto"
    result = run_cli("--json", "quantize", root / "onnx", "--mode", "auto", "--data", root / "eval.npz", "-o", out)
    assert result.exit_code in (0, 1), result.stderr
    table = check_table(out, feeds, labels, 1.0)
    assert result.exit_code == (0 if table["passed"] else 1)
    assert {row["mode"] for row in table["tries"]} >= {"int4-weight", "dynamic-int8"}
    if table["passed"]:
        assert result.json()["mode"] == table["tries"][table["chosen"]]["label"]
