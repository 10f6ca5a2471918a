"""Language models through onnxruntime-genai's model builder (the first-choice exporter).

Tiny decoders built from configs with a head size of 16 (the builder's fused attention on CPU
needs a multiple of 16; test_lm.py's head size 8 takes the optimum route instead). The builder's
graph must equal transformers (logits, greedy tokens), quantize to int4 with int8 compute, and
run in onnxruntime-genai's own runtime from the artifact folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_lm import NEW_TOKENS, save_tokenizer, transformers_greedy

pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is installed by scripts/setup (the ml extra)")


def make_decoder(folder: Path, family: str) -> Path:
    import torch
    import transformers

    # vocabulary 1000 (the tokenizer uses the first few ids): with 64, the builder's graph does not
    # match transformers (measured: half the logits' scale off) and export falls back to optimum
    common = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
              "eos_token_id": 1, "bos_token_id": 1}
    config = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}[family](**common)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # weights of a realistic scale, so that greedy tokens depend on them
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 1.0 / parameter.shape[1] ** 0.5)
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return folder


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def built(request, tmp_path_factory):
    from toolkit.export import export

    root = tmp_path_factory.mktemp(f"genai-{request.param}")
    source = make_decoder(root / "hf", request.param)
    return source, export(str(source), "onnx", root / "onnx")


def test_the_builder_writes_the_graph_and_it_equals_transformers(built):
    from toolkit.lm.generate import generate_ids
    from toolkit.lm.model import open_lm

    source, result = built
    manifest = result.manifest
    assert manifest["options"]["exporter"] == "genai"
    assert manifest["lm"]["head_size"] == 16 and manifest["lm"]["layers"] == 2
    error = manifest["export_error"]
    assert error["all_positions"] < 1e-4 and error["through_cache"] < 1e-4
    assert {"model.onnx", "genai_config.json", "tokenizer.json"} <= {p.name for p in result.out_dir.iterdir()}
    lm = open_lm(result.out_dir)
    prompt = lm.encode("the cat sat on the")
    assert list(generate_ids(lm, prompt, NEW_TOKENS)) == transformers_greedy(source, prompt, NEW_TOKENS)


def test_optimum_on_request_gives_the_same_tokens(built, tmp_path):
    from toolkit.lm.export import export_lm_onnx
    from toolkit.lm.generate import generate_ids
    from toolkit.lm.model import open_lm

    source, result = built
    optimum = export_lm_onnx(source, tmp_path / "optimum", exporter="optimum")
    assert optimum.manifest["options"]["exporter"] == "optimum"
    ours, theirs = open_lm(result.out_dir), open_lm(optimum.out_dir)
    prompt = ours.encode("a dog ran in the")
    np.testing.assert_allclose(ours.decoder.all_logits(prompt), theirs.decoder.all_logits(prompt), atol=1e-4)
    assert list(generate_ids(ours, prompt, NEW_TOKENS)) == list(generate_ids(theirs, prompt, NEW_TOKENS))


def test_int4_runs_int8_compute_and_the_genai_runtime_runs_the_folder(built, tmp_path):
    import onnxruntime_genai as og

    from toolkit.lm.generate import generate_ids
    from toolkit.lm.model import open_lm
    from toolkit.quantize import quantize

    _, result = built
    int4 = quantize(result.out_dir, "int4-weight", tmp_path / "int4")
    assert int4.manifest["quantization"]["accuracy_level"] == 4
    assert (tmp_path / "int4" / "genai_config.json").is_file()
    lm = open_lm(int4.out_dir)
    prompt = lm.encode("the cat sat on the")
    ours = list(generate_ids(lm, prompt, 8, stop_at_eos=False))
    assert len(ours) == 8

    model = og.Model(str(int4.out_dir))  # the artifact folder as onnxruntime-genai's runtime reads it
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + 8, min_length=len(prompt) + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(prompt, dtype=np.int32))
    theirs = []
    while not generator.is_done():
        generator.generate_next_token()
        theirs.append(int(generator.get_next_tokens()[0]))
    assert theirs == ours  # same graph, same greedy decoding, two runtimes


def test_a_graph_the_builder_gets_wrong_or_cannot_run_falls_back_to_optimum(tmp_path, caplog):
    import logging

    import transformers

    from tests.test_lm import make_lm
    from toolkit.errors import Unsupported
    from toolkit.lm.export import export_lm_onnx

    source = make_lm(tmp_path / "hf", "qwen2")  # head size 8: the fused attention refuses it
    result = export_lm_onnx(source, tmp_path / "auto")
    assert result.manifest["options"]["exporter"] == "optimum"
    with pytest.raises(Unsupported, match="not a multiple of 16"):
        export_lm_onnx(source, tmp_path / "forced", exporter="genai")
    assert not (tmp_path / "forced").exists()

    toy = tmp_path / "toy"  # head size 16 but a vocabulary as wide as the hidden size: the builder's graph is wrong
    make_decoder(toy, "qwen2")
    config = transformers.AutoConfig.from_pretrained(toy)
    config.vocab_size = 64
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(toy)
    with caplog.at_level(logging.INFO, logger="toolkit.lm.export"):
        checked = export_lm_onnx(toy, tmp_path / "toy-onnx")
    assert checked.manifest["options"]["exporter"] == "optimum"
    assert checked.manifest["export_error"]["max_abs_error"] < 1e-4
    assert "vocabulary size 64 equals the hidden width" in caplog.text  # not built: known wrong
    with pytest.raises(Unsupported, match="differs from transformers"):
        export_lm_onnx(toy, tmp_path / "toy-forced", exporter="genai")
