"""The transformer-fusion pre-pass: a tiny BERT from a config, exported by `edgeward export`, fused
(Attention, BiasGelu) before dynamic int8, against the float model on onnxruntime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime.transformers.optimizer")

HEADS, HIDDEN, VOCAB, SEQUENCE = 2, 32, 99, 16


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory) -> Path:
    """model.onnx (+ config.json) of a 2-layer BERT classifier, through the real CLI."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from toolkit.cli import main

    root = tmp_path_factory.mktemp("fusion")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                        intermediate_size=64, max_position_embeddings=SEQUENCE, num_labels=3)
    BertForSequenceClassification(config).eval().save_pretrained(root / "hf")
    assert main(["export", str(root / "hf"), "--to", "onnx", "-o", str(root / "onnx")]) == 0
    return root / "onnx" / "model.onnx"


def token_inputs(count: int, seed: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(5, VOCAB, size=(count, SEQUENCE), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def logits(model_path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    from toolkit.runtime import open_model

    runner = open_model(model_path, threads=1)
    names = {spec.name for spec in runner.inputs}
    return np.concatenate([runner.run({k: v[i:i + 1] for k, v in inputs.items() if k in names})[0]
                           for i in range(len(inputs["input_ids"]))])


def op_counts(model_path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(model_path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_the_encoder_is_read_from_its_config(bert_onnx):
    from toolkit.quantize.onnx_fusion import encoder_shape

    shape = encoder_shape(bert_onnx)
    assert (shape.num_heads, shape.hidden_size, shape.source) == (HEADS, HIDDEN, "config.json")


def test_fusion_fuses_attention_and_keeps_the_outputs(bert_onnx, tmp_path):
    from toolkit.quantize.onnx_fusion import fuse_transformer

    result = fuse_transformer(bert_onnx, tmp_path)
    assert result.fused, result.reason
    assert result.ops["Attention"] == 2  # one per layer
    counts = op_counts(result.model_path)
    assert counts["Attention"] == 2 and "Softmax" not in counts
    assert "SkipLayerNormalization" not in counts and "EmbedLayerNormalization" not in counts
    assert result.max_relative_error < 1e-3
    inputs = token_inputs(8, seed=1)
    np.testing.assert_allclose(logits(result.model_path, inputs), logits(bert_onnx, inputs), atol=1e-4)
    assert result.notes()["detected_from"] == "config.json"


def test_a_model_that_is_not_an_encoder_is_kept_as_it_is(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from toolkit.quantize.onnx_fusion import fuse_transformer

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    model = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    result = fuse_transformer(model, tmp_path)
    assert not result.fused and result.model_path == model
    assert "not a transformer encoder" in result.reason
    assert result.notes() == {"applied": False, "reason": result.reason}


def test_a_config_of_another_architecture_turns_fusion_off(bert_onnx, tmp_path):
    from toolkit.quantize.onnx_fusion import fuse_transformer

    folder = tmp_path / "gpt"
    folder.mkdir()
    shutil.copy(bert_onnx, folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_head": 2}))
    result = fuse_transformer(folder / "model.onnx", tmp_path)
    assert not result.fused and "not a BERT-like encoder" in result.reason


def test_dynamic_int8_int4emb_runs_fused_and_agrees_with_float(run_cli, bert_onnx, tmp_path):
    out = tmp_path / "q"
    result = run_cli("quantize", bert_onnx.parent, "--mode", "dynamic-int8-int4emb", "-o", out)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    fusion = manifest["quantization"]["transformer_fusion"]
    assert fusion["applied"] and fusion["fused_ops"]["Attention"] == 2
    counts = op_counts(out / "model.onnx")
    assert counts.get("QAttention") == 2 and "Attention" not in counts  # the fused attention is int8
    inputs = token_inputs(32, seed=2)
    reference, quantized = logits(bert_onnx, inputs), logits(out / "model.onnx", inputs)
    assert (reference.argmax(1) == quantized.argmax(1)).mean() >= 0.9
    assert np.abs(quantized - reference).max() <= 0.1 * np.abs(reference).max() + 1e-3
