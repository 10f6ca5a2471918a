"""`quantize --mode auto --objective size|latency` and the dynamic-int8-int4emb mode.

The latency objective is checked on the digits CNN with real timings (every passing try
carries a p50, the chosen one is the fastest or a near-tie of it); the rule itself on
made-up tries; the int4 embedding rewrite on a small embedding + LayerNorm model, against
the float model run by onnxruntime.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.errors import BadInput


def test_latency_objective_keeps_the_fastest_passing_try(digits_cnn_onnx, digits_test, tmp_path):
    from toolkit.quantize.auto import LATENCY_TIE, auto_quantize
    from toolkit.quantize.modes import modes_for

    result = auto_quantize(digits_cnn_onnx, tmp_path / "auto", data=digits_test, max_drop=2.0,
                           calibration="builtin:digits:train", objective="latency")
    assert result.passed and result.objective == "latency"
    tried = {t.mode for t in result.tries if not t.excluded}
    assert tried == {mode.name for mode in modes_for("onnx")}  # no size short-cut: a bigger model may be faster
    passing = [t for t in result.tries if t.passed and t.smaller]
    assert passing and all(t.p50_ms is not None and t.p50_ms > 0 for t in passing)
    assert all(t.p50_ms is None for t in result.tries if not t.passed)
    chosen = result.tries[result.chosen]
    fastest = min(t.p50_ms for t in passing)
    assert chosen.p50_ms <= fastest * (1 + LATENCY_TIE)
    near = [t for t in passing if t.p50_ms <= fastest * (1 + LATENCY_TIE)]
    assert chosen.size_bytes == min(t.size_bytes for t in near)

    table = json.loads((tmp_path / "auto" / "tries.json").read_text())
    assert table["objective"] == "latency" and table["chosen"] == result.chosen
    assert [row["p50_ms"] for row in table["tries"]] == [t.p50_ms for t in result.tries]
    markdown = (tmp_path / "auto" / "tries.md").read_text()
    assert "| p50 |" in markdown and "Objective: latency" in markdown
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["auto"]["objective"] == "latency" and manifest["auto"]["p50_ms"] == chosen.p50_ms
    assert "p50" in result.summary() and "chosen (fastest)" in result.summary()


def test_size_objective_is_the_default_and_times_nothing(digits_cnn_onnx, digits_test, tmp_path):
    from toolkit.quantize.auto import auto_quantize

    result = auto_quantize(digits_cnn_onnx, tmp_path / "auto", data=digits_test, max_drop=2.0,
                           calibration="builtin:digits:train")
    assert result.passed and result.objective == "size"
    assert all(t.p50_ms is None for t in result.tries)
    passing = [t for t in result.tries if t.passed and t.smaller]
    assert result.tries[result.chosen].size_bytes == min(t.size_bytes for t in passing)


def _state(objective, rows):
    from toolkit.quantize.auto_state import SearchState, Try

    state = SearchState(None, {}, {}, objective)
    for index, (size, p50, passed) in enumerate(rows):
        state.tries.append(Try(index=index, mode=f"m{index}", size_bytes=size, passed=passed, smaller=size < 1000,
                               p50_ms=p50))
    return state


def test_latency_rule_breaks_near_ties_by_size():
    # 10.0 ms is fastest; 10.2 ms (2% slower) is a tie and smaller; 12 ms is not; 9 ms failed the gates
    assert _state("latency", [(500, 10.0, True), (300, 10.2, True), (100, 12.0, True), (50, 9.0, False)]).best().index == 1
    assert _state("latency", [(500, 10.0, True), (300, 10.5, True)]).best().index == 0  # 5%: not a tie
    assert _state("size", [(500, 10.0, True), (300, 10.5, True), (100, None, False)]).best().index == 1
    assert _state("latency", [(1500, 1.0, True), (800, 5.0, True)]).best().index == 1  # not smaller than float


def test_bad_objective(digits_cnn_onnx, digits_test, run_cli, tmp_path):
    from toolkit.quantize.auto import auto_quantize

    with pytest.raises(BadInput, match="objective"):
        auto_quantize(digits_cnn_onnx, tmp_path / "never", data=digits_test, objective="fast")
    result = run_cli("quantize", digits_cnn_onnx, "--mode", "auto", "--data", "builtin:digits:test",
                     "--objective", "fast", "-o", tmp_path / "never")
    assert result.exit_code == 2
    result = run_cli("quantize", digits_cnn_onnx, "--mode", "dynamic-int8", "--objective", "latency",
                     "-o", tmp_path / "never")
    assert result.exit_code == 2 and "--objective is for --mode auto" in result.stderr
    assert not (tmp_path / "never").exists()


@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory):
    """ids -> Gather(2048x64 table) -> Add(position) -> LayerNorm -> MatMul -> logits: a BERT in miniature."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.normal(0, 0.5, (2048, 64)).astype(np.float32)
    position = rng.normal(0, 0.1, (16, 64)).astype(np.float32)
    weight = rng.normal(0, 0.2, (64, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], name="embed"),
        helper.make_node("Add", ["embedded", "position"], ["summed"], name="add"),
        helper.make_node("LayerNormalization", ["summed", "gamma", "beta"], ["normed"], name="norm", axis=-1),
        helper.make_node("ReduceMean", ["normed", "axes"], ["pooled"], name="pool", keepdims=0),
        helper.make_node("MatMul", ["pooled", "weight"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes, "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(position, "position"),
         numpy_helper.from_array(np.ones(64, np.float32), "gamma"), numpy_helper.from_array(np.zeros(64, np.float32), "beta"),
         numpy_helper.from_array(np.array([1], np.int64), "axes"), numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path_factory.mktemp("emb") / "emb.onnx"
    onnx.save(model, str(path))
    ids = rng.integers(0, 2048, (32, 16)).astype(np.int64)
    return path, ids


def _run(path, ids):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]


def test_int4emb_mode_shrinks_embeddings_and_keeps_answers(embedding_model, tmp_path):
    import onnx

    from toolkit.quantize import quantize

    path, ids = embedding_model
    result = quantize(path, "dynamic-int8-int4emb", tmp_path / "int4emb")
    plain = quantize(path, "dynamic-int8", tmp_path / "int8")
    assert result.size_bytes < 0.7 * plain.size_bytes  # int4 table (+ float16 scales) against int8
    notes = result.manifest["quantization"]
    assert notes["embedding_tables_int4"] == 1 and notes["add_layernorm_as_sum"] == 1
    graph = onnx.load(str(result.model_path)).graph
    ops = {node.op_type for node in graph.node}
    assert "Sum" in ops and "GatherBlockQuantized" not in ops and "MatMulInteger" in ops
    assert all(node.domain in ("", "ai.onnx") for node in graph.node)  # standard ops only
    assert "table" not in {tensor.name for tensor in graph.initializer}  # the float table is gone
    reference, quantized = _run(path, ids), _run(result.model_path, ids)
    assert quantized.shape == reference.shape
    assert (quantized.argmax(1) == reference.argmax(1)).mean() >= 0.9
    assert np.abs(quantized - reference).max() < 0.25 * np.abs(reference).max()


def test_int4_rows_round_trip():
    from toolkit.quantize.onnx_embeddings import quantize_int4_rows

    rng = np.random.default_rng(1)
    table = rng.normal(0, 1, (100, 64)).astype(np.float32)
    table[3] = 0.0  # an all-zero row must not divide by zero
    packed, scales = quantize_int4_rows(table, 32)
    assert packed.dtype == np.uint8 and packed.shape == (100, 32) and scales.shape == (100, 2, 1)
    low, high = (packed & 15).astype(np.int8) - 8, (packed >> 4).astype(np.int8) - 8
    values = np.stack([low, high], axis=-1).reshape(100, 2, 32) * scales.astype(np.float32)
    restored = values.reshape(100, 64)
    assert np.all(restored[3] == 0)
    blocks = table.reshape(100, 2, 32)
    peak = np.abs(blocks).max(-1, keepdims=True)
    assert np.all(np.abs(restored - table).reshape(100, 2, 32) <= peak * 0.26)  # clipped at 0.75 at most
    plain_scale = np.where(peak == 0, 1.0, peak / 7)
    plain = np.clip(np.round(blocks / plain_scale), -8, 7) * plain_scale
    assert ((restored - table) ** 2).sum() <= ((plain.reshape(100, 64) - table) ** 2).sum() * 1.01  # never worse
