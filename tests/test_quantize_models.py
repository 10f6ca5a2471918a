"""Quantize models that are not ours: a tiny BERT exported by optimum, and a third-party-style
ONNX graph with symbolic dimensions, an int64 scalar input and a recurrent state tensor."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.quantize import quantize
from toolkit.runtime import open_model

SEQUENCE = 16


@pytest.fixture(scope="module")
def tiny_bert_onnx(tmp_path_factory):
    """A BertForSequenceClassification built from a config (no download), exported by optimum."""
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=100, num_labels=3)
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(config).eval().save_pretrained(folder / "hf")
    main_export(str(folder / "hf"), output=str(folder / "onnx"), task="text-classification", no_post_process=True)
    return folder / "onnx" / "model.onnx"


def bert_feeds(runner, count=8, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in runner.inputs:
        if spec.name == "input_ids":
            feeds[spec.name] = rng.integers(0, 100, (count, SEQUENCE), dtype=np.int64)
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones((count, SEQUENCE), np.int64)
        else:
            feeds[spec.name] = np.zeros((count, SEQUENCE), np.int64)
    return feeds


@pytest.mark.slow
def test_tiny_bert_quantizes_with_dynamic_int8(tiny_bert_onnx, tmp_path):
    import onnx

    reference = open_model(tiny_bert_onnx)
    assert [spec.shape for spec in reference.inputs][0] == ["batch_size", "sequence_length"]
    result = quantize(tiny_bert_onnx, "dynamic-int8", tmp_path / "bert-int8")
    ops = [node.op_type for node in onnx.load(str(result.model_path)).graph.node]
    assert ops.count("MatMulInteger") >= 12  # q, k, v, output, two feed-forward per layer
    assert result.size_ratio < 0.7  # weights shrink 4x; a tiny model is mostly graph (node names)

    candidate = open_model(result.model_path)
    feeds = bert_feeds(reference)
    expected, got = reference.run(feeds)[0], candidate.run(feeds)[0]
    assert got.shape == expected.shape == (8, 3)
    assert np.abs(got - expected).max() < 0.05 * max(1.0, np.abs(expected).max())


class Stateful:
    """Builds a small recurrent-style module the way third-party graphs look."""

    @staticmethod
    def module():
        import torch

        class Step(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Linear(16, 32)
                self.recur = torch.nn.Linear(32, 32)
                self.head = torch.nn.Linear(32, 4)

            def forward(self, frames, step, state):
                hidden = torch.tanh(self.embed(frames) + self.recur(state).unsqueeze(1))
                hidden = hidden * (1.0 + 0.01 * step.to(frames.dtype))
                return self.head(hidden).mean(dim=1), hidden[:, -1]

        torch.manual_seed(0)
        return Step().eval()


@pytest.fixture(scope="module")
def stateful_onnx(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("third-party") / "stateful.onnx"
    batch, frames = torch.export.Dim("batch"), torch.export.Dim("frames", min=2)
    torch.onnx.export(
        Stateful.module(),
        (torch.randn(2, 5, 16), torch.tensor(3, dtype=torch.int64), torch.randn(2, 32)),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=["frames", "step", "state"],
        output_names=["logits", "next_state"],
        dynamic_shapes=({0: batch, 1: frames}, None, {0: batch}),
    )
    return path


def stateful_data(count=64, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "frames": rng.standard_normal((count, 7, 16)).astype(np.float32),
        "step": np.array(5, dtype=np.int64),  # a scalar input shared by every example
        "state": rng.standard_normal((count, 32)).astype(np.float32),
    }


def test_third_party_graph_has_symbolic_dims_and_several_inputs(stateful_onnx):
    runner = open_model(stateful_onnx)
    specs = {spec.name: spec for spec in runner.inputs}
    assert specs["step"].shape == [] and specs["step"].dtype == "int64"
    assert isinstance(specs["frames"].shape[0], str) and isinstance(specs["frames"].shape[1], str)
    assert specs["state"].shape[1] == 32


@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8"])
def test_third_party_graph_quantizes_and_stays_close(mode, stateful_onnx, tmp_path):
    import onnx

    calibration = None
    if mode == "static-int8":
        calibration = tmp_path / "calibration.npz"
        np.savez(calibration, **stateful_data(seed=1))
    result = quantize(stateful_onnx, mode, tmp_path / mode, calibration=calibration)
    assert result.size_ratio < 0.8  # 1,700 weights: the graph itself is most of this file
    graph = onnx.load(str(result.model_path)).graph
    # uint8 weights for static int8 on an x86 CPU without VNNI, where uint8 x int8 saturates
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    int8_weights = [t.name for t in graph.initializer if t.data_type in eight_bit and len(t.dims) == 2]
    assert len(int8_weights) == 3, int8_weights  # embed, recur and head

    reference, candidate = open_model(stateful_onnx), open_model(result.model_path)
    assert [s.name for s in candidate.inputs] == ["frames", "step", "state"]
    feeds = {name: (array if array.ndim == 0 else array[:8]) for name, array in stateful_data(seed=2).items()}
    for expected, got in zip(reference.run(feeds), candidate.run(feeds), strict=True):
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 0.05 * max(1.0, np.abs(expected).max()), mode
