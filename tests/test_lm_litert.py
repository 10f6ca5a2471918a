"""Language models to LiteRT: prefill and decode signatures with an external KV cache, on the real runtime.

Tiny decoders are built from a config (no downloads): a Qwen2 trained for seconds on the tiny grammar
(`toolkit.lm.tiny`), and a Llama with tied embeddings at its default initialisation (weights of
realistic scale, std 0.02). Each is converted once by litert-torch and run by ai-edge-litert's
interpreter; greedy tokens must equal transformers' on the same folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

NEW_TOKENS = 10


def make_llama(folder: Path) -> Path:
    import torch
    import transformers

    from toolkit.lm.tiny import save_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(folder)
    eos = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True).eos_token_id
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48,
                                      eos_token_id=eos, tie_word_embeddings=True, rope_theta=500000.0,
                                      architectures=["LlamaForCausalLM"])
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """family -> (HF folder, exported LiteRT folder) through the CLI's library call; the Llama with a KV cache
    of 32 positions (--cache-length)."""
    from toolkit.export import export
    from toolkit.lm.tiny import build_tiny_lm

    root = tmp_path_factory.mktemp("lm-litert")
    qwen2 = build_tiny_lm(root / "qwen2-hf", steps=30)
    llama = make_llama(root / "llama-hf")
    return {"qwen2": (qwen2, export(str(qwen2), "tflite", root / "qwen2-tflite").out_dir),
            "llama": (llama, export(str(llama), "tflite", root / "llama-tflite", cache_length=32).out_dir)}


@pytest.mark.slow  # the module's two conversions take ~30-60 s each on two shared cores
@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_export_matches_transformers_and_greedy_tokens_are_equal(exported, family):
    from toolkit.lm.sides import OnnxSide, TorchSide

    source, folder = exported[family]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "tflite" and manifest["options"]["exporter"] == "litert-torch"
    error = manifest["export_error"]
    assert error["float"] and error["max_abs_error"] < 1e-4 and error["through_cache"] < 1e-4
    assert manifest["lm"]["signatures"][-1] == "decode" and manifest["lm"]["signatures"][0].startswith("prefill_")
    litert, reference = OnnxSide(folder), TorchSide(source)
    assert litert.kind == "tflite"
    for prompt in ("the cat sat on", "a robot looked at the door", "the"):
        ids = litert.lm.encode(prompt)
        assert litert.greedy(ids, NEW_TOKENS) == reference.greedy(ids, NEW_TOKENS)
    window = litert.lm.encode("the dog ran to the park again the child slept near a board today")
    np.testing.assert_allclose(litert.logits(np.asarray(window)), reference.logits(np.asarray(window)), atol=1e-4)


@pytest.mark.slow  # the module's two conversions take ~30-60 s each on two shared cores
def test_tokens_run_through_prefill_windows_then_decode_steps(exported):
    """The Llama's cache holds 32 positions (prefill_16, prefill_32, decode): 10 tokens go through
    prefill_16 from position 0, 12 more through prefill_16 at 10 (padded), and 8 more, where no window
    fits before the cache's end, one decode step each; every logit matches transformers'."""
    from toolkit.lm.sides import OnnxSide, TorchSide

    source, folder = exported["llama"]
    litert, reference = OnnxSide(folder), TorchSide(source)
    decoder = litert.lm.decoder
    assert decoder.context == 32 and decoder.prefill_lengths == [16, 32]
    assert json.loads((folder / "manifest.json").read_text())["options"]["cache_length"] == 32
    ids = np.random.default_rng(3).integers(0, 32, size=30)
    expected = reference.logits(ids)
    decoder.reset()
    for start, stop in ((0, 10), (10, 22), (22, 30)):
        np.testing.assert_allclose(decoder.forward(ids[start:stop]), expected[stop - 1], atol=1e-4)
    assert decoder.past_length == 30
    np.testing.assert_allclose(decoder.all_logits(ids), expected, atol=1e-4)
    assert decoder.past_length == 30  # all_logits leaves the cache as it was
    with pytest.raises(Exception, match="do not fit"):
        decoder.forward(ids[:3])


@pytest.mark.slow  # the module's two conversions take ~30-60 s each on two shared cores
def test_generate_and_bench_cli(exported, run_cli):
    _, folder = exported["qwen2"]
    text = run_cli("--json", "generate", folder, "--prompt", "the cat", "--max-new-tokens", "6")
    assert text.exit_code == 0, text.stderr
    assert text.json()["text"].strip()
    streamed = run_cli("generate", folder, "--prompt", "the cat", "--max-new-tokens", "6")
    assert streamed.exit_code == 0 and streamed.stdout.strip() == text.json()["text"].strip()
    bench = run_cli("--json", "bench", folder, "--prompt-tokens", "8", "--new-tokens", "6", "--runs", "2",
                    "--threads", "1")
    assert bench.exit_code == 0, bench.stderr
    record = bench.json()
    assert record["model"]["format"] == "tflite"
    lm = record["language_model"]
    assert lm["decode_tokens_per_s"] > 0 and lm["ttft_ms_p50"] > 0 and len(lm["tokens"]) == 6
    assert lm["kv_cache_bytes"] == 2 * 2 * 64 * 2 * 16 * 4  # layers x (k, v) x positions x kv heads x head x fp32


@pytest.mark.slow  # the module's two conversions take ~30-60 s each on two shared cores
def test_int4_block_quantize_is_smaller_and_agrees(exported, run_cli, tmp_path):
    from toolkit.lm.sides import OnnxSide

    source, folder = exported["qwen2"]
    out = tmp_path / "int4"
    done = run_cli("--json", "quantize", folder, "--mode", "int4-weight", "--block-size", "32", "-o", out)
    assert done.exit_code == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    float_bytes = (folder / "model.tflite").stat().st_size
    int4_bytes = (out / "model.tflite").stat().st_size
    assert int4_bytes < 0.65 * float_bytes  # the tiny model's mask and norms stay float
    assert "blockwise_32" in json.dumps(manifest)
    quantized, original = OnnxSide(out), OnnxSide(folder)
    window = np.asarray(original.lm.encode("the cat sat on the mat today a bird ran to the park again the dog"))
    agreement = np.mean(quantized.logits(window).argmax(-1) == original.logits(window).argmax(-1))
    assert agreement >= 0.8
    assert run_cli("generate", out, "--prompt", "the cat", "--max-new-tokens", "4").exit_code == 0
    from toolkit.lm.tiny import bundled_text

    checked = run_cli("--json", "validate", out, "--reference", source, "--data", bundled_text("tiny_heldout.txt"))
    assert checked.exit_code == 0, checked.stderr
    report = checked.json()
    assert report["passed"] and report["candidate_format"] == "tflite" and report["reference_format"] == "hf"
    assert report["perplexity_ratio"] < 1.1 and report["top1_agreement"] >= 0.9
    too_big = run_cli("quantize", folder, "--mode", "int4-weight", "--block-size", "128", "-o", tmp_path / "b128")
    assert too_big.exit_code == 3 and "smaller --block-size" in too_big.stderr
    assert not (tmp_path / "b128").exists()


@pytest.mark.slow  # the module's two conversions take ~30-60 s each on two shared cores
@pytest.mark.parametrize("mode", ["dynamic-int8", "fp16"])
def test_other_litert_modes_keep_the_signatures(exported, run_cli, tmp_path, mode):
    _, folder = exported["qwen2"]
    done = run_cli("quantize", folder, "--mode", mode, "-o", tmp_path / mode)
    assert done.exit_code == 0, done.stderr
    assert run_cli("generate", tmp_path / mode, "--prompt", "the dog", "--max-new-tokens", "4").exit_code == 0


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_an_architecture_litert_cannot_take_exits_3_naming_it(tmp_path, run_cli, family):
    import transformers

    from toolkit.lm.tiny import save_tokenizer

    folder = tmp_path / family
    if family == "gpt2":
        config = transformers.GPT2Config(vocab_size=32, n_embd=32, n_layer=1, n_head=2, n_positions=32)
        model, name = transformers.GPT2LMHeadModel(config), "GPT2LMHeadModel"
    else:
        config = transformers.Gemma2Config(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, head_dim=16)
        model, name = transformers.Gemma2ForCausalLM(config), "Gemma2ForCausalLM"
    model.save_pretrained(folder)
    save_tokenizer(folder)
    result = run_cli("export", folder, "--to", "tflite", "-o", tmp_path / "out")
    assert result.exit_code == 3 and name in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the module's two conversions take ~30-60 s each on two shared cores
@pytest.mark.parametrize("runtime", ["open_model", "open_interpreter"])
def test_in_place_feeding_equals_signature_runner_copies(exported, runtime):
    """The decoder writes tokens and the cache into the interpreter's own buffers (one copy of the cache per
    step); ai-edge-litert's SignatureRunner, fed fresh arrays each call, must give the same logits bit for bit,
    through prefill, decode steps, a switch back to prefill, and a reset."""
    from toolkit.lm import litert_decoder
    from toolkit.lm.litert_decoder import LiteRtDecoder, open_interpreter

    _, folder = exported["llama"]
    decoder = LiteRtDecoder(getattr(litert_decoder, runtime)(folder / "model.tflite"))
    interpreter = open_interpreter(folder / "model.tflite")
    runners = {name: interpreter.get_signature_runner(name) for name in ("prefill_16", "decode")}
    details = runners["decode"].get_input_details()
    empty = {name: np.zeros(item["shape"], item["dtype"]) for name, item in details.items()
             if name.startswith("kv_cache_")}
    ids = np.random.default_rng(5).integers(0, 32, size=22)

    def reference(steps):
        cache, logits = dict(empty), []
        for name, start, stop in steps:
            window = np.zeros(16 if name == "prefill_16" else 1, np.int32)
            window[:stop - start] = ids[start:stop]
            outputs = runners[name](tokens=window[None], input_pos=np.arange(start, start + window.size, dtype=np.int32),
                                    **cache)
            cache = {key: outputs[key] for key in empty}
            logits.append(outputs["logits"][0, stop - start - 1])
        return logits, cache

    steps = [("prefill_16", 0, 5), ("decode", 5, 6), ("decode", 6, 7), ("prefill_16", 7, 20), ("decode", 20, 21)]
    expected, expected_cache = reference(steps)
    for _ in range(2):  # the second pass starts from reset(): the cache must start empty again
        decoder.reset()
        got = [decoder.forward(ids[start:stop]) for _, start, stop in steps]
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)
        assert decoder.past_length == 21
        past = decoder.past
        assert set(past) == set(empty)
        for name in empty:
            np.testing.assert_array_equal(past[name], expected_cache[name])
    decoder.all_logits(ids[:4])  # scores from an empty cache, then puts the sequence's cache back
    np.testing.assert_array_equal(decoder.forward(ids[21:22]), reference(steps + [("decode", 21, 22)])[0][-1])


def test_cache_length_flag_is_checked_before_any_conversion(tmp_path, run_cli):
    folder = make_llama(tmp_path / "llama")
    short = run_cli("export", folder, "--to", "tflite", "--cache-length", "1", "-o", tmp_path / "short")
    assert short.exit_code == 2 and "--cache-length 1" in short.stderr and "48" in short.stderr
    onnx = run_cli("export", folder, "--to", "onnx", "--cache-length", "16", "-o", tmp_path / "onnx")
    assert onnx.exit_code == 2 and "--cache-length applies to" in onnx.stderr
    assert not (tmp_path / "short").exists() and not (tmp_path / "onnx").exists()
