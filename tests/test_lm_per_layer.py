"""Per-layer error of a language model (issue 15 item 3): the hidden states after every decoder layer.

A 3-layer Qwen2 trained for seconds on the tiny grammar (toolkit.lm.tiny, no downloads) is exported
with optimum and quantized to int4 (block 32); a copy of that int4 graph has one layer's weight
scales tripled. onnxruntime-genai's builder graph (fused norms) is checked on a re-initialised Qwen2
with the vocabulary the builder needs (tests/test_lm_genai.py).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from toolkit.lm.per_layer import MAX_WINDOWS
from toolkit.validate.per_layer import CAP_DB

LABELS = ["embed_tokens", "layers.0", "layers.1", "layers.2", "norm", "lm_head"]
CORRUPTED = "/model/layers.1/mlp/down_proj/MatMul_Q4"


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict:
    from toolkit.lm.export import export_lm_onnx
    from toolkit.lm.tiny import HELDOUT_FILE, build_tiny_lm, bundled_text
    from toolkit.quantize import quantize

    root = tmp_path_factory.mktemp("lm-per-layer")
    source = build_tiny_lm(root / "hf", layers=3)
    fp32 = export_lm_onnx(source, root / "fp32", exporter="optimum").out_dir
    int4 = quantize(fp32, "int4-weight", root / "int4", block_size=32).out_dir
    return {"hf": source, "fp32": fp32, "int4": int4, "corrupted": scaled_copy(int4, root / "corrupted"),
            "text": bundled_text(HELDOUT_FILE)}


def scaled_copy(folder: Path, target: Path) -> Path:
    """The int4 model with the weight scales of one layer's MLP output projection tripled."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(folder, target)
    model = onnx.load(str(target / "model.onnx"))
    node = next(node for node in model.graph.node if node.name == CORRUPTED)
    assert node.op_type == "MatMulNBits"
    index = next(i for i, tensor in enumerate(model.graph.initializer) if tensor.name == node.input[2])
    scales = numpy_helper.to_array(model.graph.initializer[index])
    model.graph.initializer[index].CopyFrom(numpy_helper.from_array(scales * 3, node.input[2]))
    onnx.save(model, str(target / "model.onnx"))
    return target


def per_layer(candidate, reference, text, **options):
    from toolkit.lm.validate import validate_lm

    report = validate_lm(candidate, reference, text, record=False, prompts=0, per_layer=True, **options)
    return report, {layer.node: layer for layer in report.per_layer.layers}


def test_int4_block32_errors_are_measured_at_every_layer_and_the_worst_named(lms):
    report, layers = per_layer(lms["int4"], lms["fp32"], lms["text"])
    result = report.per_layer
    assert list(layers) == LABELS
    # the first MAX_WINDOWS windows of the text (64 tokens each here): 8 of 9, 512 of 560 positions
    assert result.windows == min(report.windows, MAX_WINDOWS) and result.samples == 64 * result.windows
    # measured here: relative error 0.082 (int4 embedding table), then 0.035-0.039 through the layers,
    # output SQNR 21.7 dB, then 28-29 dB; cosine >= 0.996
    for layer in layers.values():
        assert math.isfinite(layer.sqnr_db) and 15 < layer.sqnr_db < 45
        assert 0.005 < layer.relative_error < 0.2 and 0.99 < layer.cosine < 1.0
    # every int4 decoder layer adds noise of its own (its MatMuls), measured as the growth of the
    # residual stream's noise: own SQNR 29-35 dB, far from the "exact" cap
    for index in range(3):
        assert 20 < layers[f"layers.{index}"].local_sqnr_db < 45
    assert layers["lm_head"].tensor == "logits" and layers["layers.0"].tensor == "/model/layers.0/Add_1_output_0"
    worst = result.worst[0]
    assert result.worst_layer == worst.node
    assert worst.local_sqnr_db == min(layer.local_sqnr_db for layer in layers.values())
    assert not any(layer.downstream for layer in layers.values())


def test_a_corrupted_layer_is_named_worst_and_the_layers_after_it_downstream(lms):
    report, layers = per_layer(lms["corrupted"], lms["fp32"], lms["text"], top=3)
    result = report.per_layer
    # measured here: layers.1 SQNR -1.85 dB (relative error 1.24) where the int4 model has 28 dB
    assert result.worst_layer == "layers.1" and len(result.worst) <= 3
    assert layers["layers.1"].sqnr_db < 5 and layers["layers.1"].relative_error > 0.5
    assert layers["layers.0"].sqnr_db > 20  # untouched before the corrupted layer
    assert layers["layers.2"].downstream and not layers["layers.1"].downstream
    assert not report.passed  # the whole-model gates see it too


def test_the_hf_folder_as_reference_gives_the_same_points(lms):
    _, exact = per_layer(lms["fp32"], lms["hf"], lms["text"])
    assert all(layer.sqnr_db > 80 for layer in exact.values())  # the export is transformers to float rounding
    _, against_hf = per_layer(lms["int4"], lms["hf"], lms["text"])
    _, against_onnx = per_layer(lms["int4"], lms["fp32"], lms["text"])
    for label in LABELS:
        assert against_hf[label].sqnr_db == pytest.approx(against_onnx[label].sqnr_db, abs=0.05)
        assert against_hf[label].tensor == f"{label} (transformers)"


def cli_per_layer(run_cli, corrupted, lms: dict, out) -> dict:
    """`validate --per-layer` of the corrupted model (human output: layers.1 named) and of the int4 one
    (--json, -o out): the JSON record's per_layer, its table and worst layer checked."""
    text = run_cli("validate", corrupted, "--reference", lms["fp32"], "--data", lms["text"], "--per-layer",
                   "--no-record", "--prompts", "0", "--no-gate", "ppl", "--no-gate", "agreement", "--no-gate", "kl")
    assert text.exit_code == 0, text.stderr
    assert "per-layer error" in text.stdout and "worst layer: layers.1" in text.stdout
    assert all(label in text.stdout for label in LABELS)
    result = run_cli("--json", "validate", lms["int4"], "--reference", lms["fp32"], "--data", lms["text"],
                     "--per-layer", "--top", "2", "--no-record", "--prompts", "0", "-o", out)
    assert result.exit_code == 0, result.stderr
    record = result.json()["per_layer"]
    assert [layer["node"] for layer in record["layers"]] == LABELS and len(record["worst"]) <= 2
    assert record["worst_layer"] == record["worst"][0]["node"] and record["kind"] == "language-model"
    return record


def test_the_cli_prints_the_table_and_json_and_report_carry_it(lms, run_cli, tmp_path):
    out = tmp_path / "report"
    record = cli_per_layer(run_cli, lms["corrupted"], lms, out)
    assert all(0 < layer["relative_error"] < 1 and layer["cosine"] > 0.99 for layer in record["layers"])
    saved = json.loads((out / "report.json").read_text())
    assert saved["per_layer"]["worst_layer"] == record["worst_layer"]
    markdown = (out / "report.md").read_text()
    assert "## Per-layer error" in markdown and f"Worst layer: **{record['worst_layer']}**" in markdown
    assert (out / "per_layer_sqnr.png").read_bytes()[:4] == b"\x89PNG" and "per_layer_sqnr.png" in markdown


def test_a_tflite_reference_for_an_onnx_candidate_is_refused(lms, tmp_path):
    """TFLite language models have their own per-layer path (tests/test_lm_litert_per_layer.py); an ONNX
    candidate is compared with an ONNX reference or the HF folder, and told so before anything is opened."""
    from toolkit.errors import BadInput
    from toolkit.lm.validate import validate_lm

    folder = tmp_path / "lm-tflite"
    shutil.copytree(lms["fp32"], folder)
    (folder / "model.onnx").unlink()
    (folder / "model.tflite").write_bytes(b"TFL3")
    for reference in (folder, folder / "model.tflite"):
        with pytest.raises(BadInput, match="ONNX model and the reference .* TFLITE one"):
            validate_lm(lms["fp32"], reference, lms["text"], per_layer=True, record=False)


@pytest.fixture(scope="module")
def builder_lm(tmp_path_factory) -> dict:
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is installed by scripts/setup (the ml extra)")
    from tests.test_lm import SENTENCES
    from tests.test_lm_genai import make_decoder
    from toolkit.lm.export import export_lm_onnx
    from toolkit.quantize import quantize

    root = tmp_path_factory.mktemp("lm-per-layer-genai")
    source = make_decoder(root / "hf", "qwen2")
    fp32 = export_lm_onnx(source, root / "fp32", exporter="genai").out_dir
    int4 = quantize(fp32, "int4-weight", root / "int4", block_size=32).out_dir
    text = root / "text.txt"
    text.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    return {"hf": source, "fp32": fp32, "int4": int4, "text": text}


def test_the_builder_graph_exposes_its_fused_residuals(builder_lm):
    _, exact = per_layer(builder_lm["fp32"], builder_lm["hf"], builder_lm["text"])
    assert list(exact) == ["embed_tokens", "layers.0", "layers.1", "norm", "lm_head"]
    # layer 0's output is the residual sum inside layer 1's fused input norm; the last layer's is the one
    # given to the final norm here; both equal transformers' layer outputs to float rounding
    assert exact["layers.0"].candidate_tensor == "/model/layers.1/input_layernorm/output_3"
    assert exact["layers.1"].candidate_tensor.startswith("/model/layers.2/final_norm_layernorm/")
    assert all(layer.sqnr_db > 80 for layer in exact.values())
    report, layers = per_layer(builder_lm["int4"], builder_lm["fp32"], builder_lm["text"])
    # measured here on this re-initialised model: SQNR 21 dB (embedding) down to 10 dB (logits)
    assert all(math.isfinite(layer.sqnr_db) and 5 < layer.sqnr_db < 40 for layer in layers.values())
    assert layers["lm_head"].sqnr_db < layers["embed_tokens"].sqnr_db  # the error grows through the layers
    assert all(layer.local_sqnr_db < CAP_DB for label, layer in layers.items() if label.startswith("layers."))
    assert report.per_layer.worst_layer in layers
