"""Per-layer error of a LiteRT language model (issue 15 item 3): the hidden states after every decoder layer,
read from the .tflite's prefill graph with every intermediate tensor kept.

A 3-layer Qwen2 trained for seconds on the tiny grammar (toolkit.lm.tiny, no downloads) is exported by
litert-torch (KV cache of 64 positions: prefill_16, prefill_64, decode) and quantized to int4 (block 32)
by ai-edge-quantizer; a copy of the float export has one layer's MLP output weights tripled.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_lm_per_layer import LABELS, cli_per_layer, per_layer
from toolkit.validate.per_layer import CAP_DB


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict:
    from toolkit.export import export
    from toolkit.lm.tiny import HELDOUT_FILE, build_tiny_lm, bundled_text
    from toolkit.quantize import quantize

    root = tmp_path_factory.mktemp("lm-litert-per-layer")
    source = build_tiny_lm(root / "hf", layers=3, steps=30)
    fp32 = export(str(source), "tflite", root / "fp32").out_dir
    int4 = quantize(fp32, "int4-weight", root / "int4", block_size=32).out_dir
    return {"hf": source, "fp32": fp32, "int4": int4, "corrupted": scaled_copy(fp32, root / "corrupted"),
            "text": bundled_text(HELDOUT_FILE), "root": root}


def scaled_copy(folder: Path, target: Path) -> Path:
    """The float export with layer 1's MLP output projection (w2) weights tripled, in place in the flatbuffer
    (every signature shares the buffer)."""
    from ai_edge_litert import schema_py_generated as schema

    shutil.copytree(folder, target)
    data = bytearray((target / "model.tflite").read_bytes())
    model = schema.Model.GetRootAs(data, 0)
    subgraph = model.Subgraphs(0)
    ops = [subgraph.Operators(i) for i in range(subgraph.OperatorsLength())]
    down = next(op for op in ops
                if "TransformerBlock_1/" in (name := subgraph.Tensors(op.Outputs(0)).Name().decode().split(";")[0])
                and name.endswith("Linear_w2"))
    weights = model.Buffers(subgraph.Tensors(down.Inputs(1)).Buffer()).DataAsNumpy().view(np.float32)
    assert weights.size == 128 * 64  # a view into `data`, written in place
    weights *= 3
    (target / "model.tflite").write_bytes(bytes(data))
    return target


def test_the_float_export_equals_transformers_at_every_layer(lms):
    report, layers = per_layer(lms["fp32"], lms["hf"], lms["text"])
    result = report.per_layer
    assert list(layers) == LABELS and result.format == "tflite" and result.reference_kind == "hf"
    assert result.windows == 8 and result.samples == 8 * 64  # windows of the cache's 64 positions, prefill_64
    # measured here: output SQNR 135-137 dB, relative error <= 1.7e-7 (the embedding is exact)
    assert all(layer.sqnr_db > 100 and layer.relative_error < 1e-5 for layer in layers.values())
    assert result.worst_layer is None  # no layer adds noise above the cap
    assert "TransformerBlock_0" in layers["layers.0"].candidate_tensor
    assert "RMSNorm_final_norm" in layers["norm"].candidate_tensor
    assert layers["lm_head"].candidate_tensor.endswith("_logits_output")
    assert layers["layers.2"].tensor == "layers.2 (transformers)"


def test_int4_errors_are_measured_at_every_layer_and_the_worst_named(lms):
    report, layers = per_layer(lms["int4"], lms["fp32"], lms["text"])
    result = report.per_layer
    assert list(layers) == LABELS and result.reference_kind == "tflite"
    # measured here: relative error 0.099 at the int4 embedding table (20.1 dB), 0.042-0.047 after it
    # (26.6-27.5 dB); each int4 layer's own SQNR 26.6, 32.6, 35.8 dB; cosine >= 0.995
    for layer in layers.values():
        assert math.isfinite(layer.sqnr_db) and 12 < layer.sqnr_db < 45
        assert 0.005 < layer.relative_error < 0.25 and 0.98 < layer.cosine < 1.0
    for index in range(3):
        assert 15 < layers[f"layers.{index}"].local_sqnr_db < CAP_DB
    worst = result.worst[0]
    assert result.worst_layer == worst.node == "embed_tokens"
    assert worst.local_sqnr_db == min(layer.local_sqnr_db for layer in layers.values())
    # the float export is transformers to 1e-7, so the HF folder as reference gives the same figures
    _, against_hf = per_layer(lms["int4"], lms["hf"], lms["text"])
    for label in LABELS:
        assert against_hf[label].sqnr_db == pytest.approx(layers[label].sqnr_db, abs=0.05)


def test_a_corrupted_layer_is_named_worst_and_the_layers_after_it_downstream(lms):
    report, layers = per_layer(lms["corrupted"], lms["fp32"], lms["text"], top=3)
    result = report.per_layer
    assert result.worst_layer == "layers.1" and len(result.worst) <= 3
    assert layers["layers.0"].sqnr_db > 100  # untouched before the corrupted layer
    assert layers["layers.1"].sqnr_db < 15 and layers["layers.2"].downstream and not layers["layers.1"].downstream


def test_windows_through_prefill_pieces_and_decode_steps_give_the_same_points(lms):
    """A window longer than the prefill signature runs in pieces (the last padded), the cache carried between
    them; with no prefill at all, one decode step a token. The points agree with the single prefill_64 run."""
    from toolkit.lm.litert_per_layer import LiteRtExposedGraph

    graph = LiteRtExposedGraph(lms["int4"] / "model.tflite")
    assert graph.prefill_lengths == [16, 64] and graph.context == 64
    window = np.random.default_rng(0).integers(0, 32, size=40)
    whole = graph.run(window)
    assert all(whole[label].shape == (40, 32 if label == "lm_head" else 64) for label in LABELS)
    for lengths in ([16], []):
        graph.prefill_lengths = lengths
        pieces = graph.run(window)
        for label in LABELS:
            np.testing.assert_allclose(pieces[label], whole[label], rtol=1e-4, atol=1e-4)


def test_the_cli_prints_the_table_and_the_json_and_report_carry_it(lms, run_cli, tmp_path):
    out = tmp_path / "report"
    record = cli_per_layer(run_cli, lms["corrupted"] / "model.tflite", lms, out)
    assert record["format"] == "tflite" and record["reference_format"] == "tflite"
    markdown = (out / "report.md").read_text()
    assert "## Per-layer error" in markdown and f"Worst layer: **{record['worst_layer']}**" in markdown
    assert json.loads((out / "report.json").read_text())["per_layer"]["worst_layer"] == record["worst_layer"]


def test_a_reference_of_another_format_or_depth_exits_2_in_one_line(lms, run_cli):
    from toolkit.lm.tiny import build_tiny_lm

    onnx = lms["root"] / "onnx-like"  # the format check runs before any model is opened
    shutil.copytree(lms["fp32"], onnx, ignore=shutil.ignore_patterns("model.tflite"))
    (onnx / "model.onnx").write_bytes(b"not opened")
    other = run_cli("validate", lms["int4"], "--reference", onnx, "--data", lms["text"], "--per-layer", "--no-record")
    assert other.exit_code == 2 and len(other.stderr.strip().splitlines()) == 1
    assert "TFLITE model" in other.stderr and "ONNX one" in other.stderr and "--reference" in other.stderr
    shallow = build_tiny_lm(lms["root"] / "hf-2-layers", layers=2, steps=1)
    deeper = run_cli("validate", lms["int4"], "--reference", shallow, "--data", lms["text"], "--per-layer",
                     "--no-record", "--prompts", "0", "--no-gate", "ppl", "--no-gate", "agreement", "--no-gate", "kl")
    assert deeper.exit_code == 2 and len(deeper.stderr.strip().splitlines()) == 1
    assert "3 decoder layers" in deeper.stderr and "2" in deeper.stderr
