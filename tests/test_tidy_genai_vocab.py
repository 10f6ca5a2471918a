"""Why onnxruntime-genai's builder gets toy decoders wrong (see toolkit.lm.genai_builder): it takes
the first Linear with `vocab_size` outputs for the LM head, and a layer's projection is found first
when it is as wide as the vocabulary. A small vocabulary is fine when no layer is that wide."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_lm_genai import make_decoder

pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is installed by scripts/setup (the ml extra)")


def decoder_with_vocabulary(folder: Path, vocab_size: int) -> Path:
    """test_lm_genai's 2-layer Qwen2 (hidden 64, 2 KV heads of 16, MLP 128) with another vocabulary."""
    import torch
    import transformers

    make_decoder(folder, "qwen2")
    config = transformers.AutoConfig.from_pretrained(folder)
    config.vocab_size = vocab_size
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_48_token_vocabulary_no_layer_is_as_wide_as_exports_through_the_builder(tmp_path):
    from toolkit.lm.export import export_lm_onnx

    result = export_lm_onnx(decoder_with_vocabulary(tmp_path / "hf", 48), tmp_path / "onnx")
    assert result.manifest["options"]["exporter"] == "genai"
    assert result.manifest["export_error"]["max_abs_error"] < 1e-4


@pytest.mark.slow
def test_a_32_token_vocabulary_as_wide_as_k_proj_gets_layer_0_wired_to_the_head(tmp_path):
    """32 = 2 KV heads x 16, the width of k_proj and v_proj (builtin:tiny-lm's case)."""
    import onnx

    from toolkit.lm.genai_builder import build_with_genai

    folder = decoder_with_vocabulary(tmp_path / "hf", 32)
    stage, scratch = tmp_path / "stage", tmp_path / "scratch"
    stage.mkdir()
    scratch.mkdir()
    assert build_with_genai(folder, stage, scratch) is None
    graph = onnx.load(str(stage / "model.onnx"), load_external_data=False).graph
    head = next(node for node in graph.node if node.name == "/lm_head/MatMul")
    # If this fails, the builder finds its head another way now: check the docstring and the fallback.
    assert head.input[0].startswith("/model/layers.0/")
    final_norm = next(node for node in graph.node if "final_norm" in node.name)
    assert not [node for node in graph.node if final_norm.output[0] in node.input]  # feeds nothing
