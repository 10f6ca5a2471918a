"""Speech (issue 15 item 8): a Whisper encoder-decoder exported as an encoder plus a cached decoder.

A tiny Whisper is built from a config (no downloads) with a word-level tokenizer and a
WhisperFeatureExtractor saved beside it; WAV clips are written with the standard library's
`wave`. The ONNX transcript's tokens must equal transformers' greedy `generate` on the same
features; validation, the real-time factor and the per-minute break-even run on real runtimes.
"""

from __future__ import annotations

import json
import wave
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

RATE = 16000
WORDS = [f"w{i}" for i in range(56)]
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def write_pcm16(path: Path, samples: np.ndarray) -> Path:
    """A mono 16-bit WAV file at RATE of `samples` (already scaled to the int16 range)."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(samples.astype("<i2").tobytes())
    return path


def write_wav(path: Path, seconds: float, frequency: float) -> Path:
    times = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(int(frequency)).standard_normal(times.size) * 0.05
    samples = (0.3 * np.sin(2 * np.pi * frequency * times) + noise) * 32767
    return write_pcm16(path, samples)


def make_whisper(folder: Path) -> Path:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {word: i for i, word in enumerate(WORDS + SPECIALS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:]).save_pretrained(folder)
    config = transformers.WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=80, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, max_target_positions=64,
        decoder_start_token_id=vocab["<|startoftranscript|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    model.generation_config.forced_decoder_ids = None
    model.generation_config.begin_suppress_tokens = [vocab["<|endoftext|>"]]  # as Whisper's own configs do
    model.generation_config.suppress_tokens = [vocab["<|en|>"]]
    model.save_pretrained(folder, safe_serialization=True)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def whisper(tmp_path_factory) -> tuple[Path, Path]:
    """(the Hugging Face folder, its export): exported once for the module."""
    from toolkit.export import export

    root = tmp_path_factory.mktemp("speech")
    folder = make_whisper(root / "whisper")
    result = export(folder, "onnx", root / "whisper-onnx")
    return folder, result.out_dir


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_wav(folder / "a.wav", 3.0, 440)
    write_wav(folder / "b.wav", 1.5, 220)
    return folder


def transformers_tokens(folder: Path, wav: Path, max_new_tokens: int) -> list[int]:
    import torch
    import transformers

    from toolkit.speech.transcribe import read_clip

    extractor = transformers.WhisperFeatureExtractor.from_pretrained(folder)
    features = extractor([read_clip(wav, RATE)], sampling_rate=RATE, return_tensors="pt").input_features
    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()
    with torch.no_grad():
        tokens = model.generate(features, max_new_tokens=max_new_tokens)[0].tolist()
    eos = model.generation_config.eos_token_id
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def test_whisper_exports_an_encoder_and_a_cached_decoder(whisper):
    _, out = whisper
    names = {path.name for path in out.iterdir()}
    assert {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "manifest.json",
            "preprocessor_config.json", "tokenizer.json", "generation_config.json"} <= names
    assert "decoder_model_merged.onnx" not in names
    manifest = json.loads((out / "manifest.json").read_text())
    error = manifest["export_error"]
    assert manifest["options"]["task"] == "automatic-speech-recognition-with-past"
    assert error["encoder"] < 1e-4 and error["decoder_through_cache"] < 1e-4 and error["tokens"] > 8
    assert manifest["seq2seq"]["kind"] == "speech" and manifest["seq2seq"]["graphs"] == ["encoder_model.onnx", "decoder_model.onnx",
                                            "decoder_with_past_model.onnx"]


def test_generate_transcribes_a_wav_like_transformers(whisper, clips, run_cli):
    folder, out = whisper
    done = run_cli("--json", "generate", out, "--audio", clips / "a.wav", "--max-new-tokens", "24")
    assert done.exit_code == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["audio_seconds"] == 3.0 and record["prompt_tokens"] == [57]
    assert len(record["tokens"]) > 0
    assert record["tokens"] == transformers_tokens(folder, clips / "a.wav", 24)
    assert record["text"] == " ".join(WORDS[t] for t in record["tokens"] if t < len(WORDS))


def test_speech_bad_input_and_unsupported(whisper, clips, run_cli, tmp_path):
    folder, out = whisper
    assert run_cli("generate", out, "--audio", tmp_path / "missing.wav").exit_code == 2
    assert run_cli("generate", out, "--audio", clips / "a.wav", "--prompt", "hi").exit_code == 2
    (tmp_path / "noise.wav").write_bytes(b"RIFF not a wave")
    bad = run_cli("generate", out, "--audio", tmp_path / "noise.wav")
    assert bad.exit_code == 2 and "noise.wav" in bad.stderr
    tflite = run_cli("export", folder, "--to", "tflite", "-o", tmp_path / "t")
    assert tflite.exit_code == 3 and "litert-torch" in tflite.stderr and not (tmp_path / "t").exists()
    from toolkit.errors import Unsupported
    from toolkit.sources import load_source

    with pytest.raises(Unsupported, match="speech encoder-decoder"):
        load_source(str(folder))


def test_validate_compares_transcript_tokens(whisper, clips, run_cli, tmp_path):
    folder, out = whisper
    done = run_cli("--json", "validate", out, "--reference", folder, "--data", clips, "-o", tmp_path / "report")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["clips"] == 2 and report["token_agreement"] == 1.0 and report["exact_match_rate"] == 1.0
    assert json.loads((tmp_path / "report" / "report.json").read_text())["passed"] is True
    from toolkit.speech.validate import agreement

    assert agreement([1, 2, 3], [1, 2]) == (2, 3) and agreement([5], [4, 5]) == (0, 2)


def test_bench_real_time_factor_prices_per_minute(whisper, clips, run_cli, tmp_path):
    """The real-time factor turns a scenario's audio seconds into a time per request; the cloud side
    is the per-minute speech API of the catalogue (Amazon Transcribe standard, $0.024 a minute)."""
    from toolkit.costs import breakeven

    _, out = whisper
    bench_file = tmp_path / "speech-bench.json"
    done = run_cli("--json", "bench", out, "--audio", clips / "a.wav", "--runs", "3", "--warmup", "1",
                   "-o", bench_file)
    assert done.exit_code == 0, done.stderr
    speech = json.loads(bench_file.read_text())["speech"]
    assert speech["audio_seconds"] == 3.0 and speech["processing_ms_p50"] > 0
    assert speech["real_time_factor"] == pytest.approx(3000 / speech["processing_ms_p50"], rel=1e-3)
    factor = Decimal(str(speech["real_time_factor"]))

    def scenario(budget_ms):
        return {"traffic": {"active_users": 1000, "requests_per_user_per_day": 10, "seconds_per_request": 30},
                "cloud": {"api": "aws-transcribe-standard"},
                "edge": {"engineering_hours": 10, "hourly_rate": 100, "latency_budget_ms": budget_ms},
                "router": {"on_device_share": 1.0}}

    expected_ms = Decimal(30) * 1000 / factor
    served = breakeven(scenario(float(expected_ms) * 2), bench=[bench_file])
    assert served.inputs.latency_ms == expected_ms and "real-time factor" in served.scenario.sources["latency_ms"]
    assert served.effective_share == 1 and served.rows[0].edge["cloud"] == 0
    # 300,000 requests in month 1 x 30 s / 60 x $0.024 a minute
    assert served.rows[0].cloud_only == 300_000 * Decimal(30) / 60 * Decimal("0.024")
    too_slow = breakeven(scenario(float(expected_ms) / 2), bench=[bench_file])
    assert too_slow.effective_share == 0
    no_seconds = scenario(1000)
    del no_seconds["traffic"]["seconds_per_request"]
    from toolkit.errors import BadInput

    with pytest.raises(BadInput, match="seconds_per_request"):
        breakeven(no_seconds, bench=[bench_file])


def make_t5(folder: Path):
    """A tiny T5 (2 layers, d_model 32) with a word-level tokenizer; (its tokenizer, the model)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {word: i for i, word in enumerate(["<pad>", "</s>", "<unk>", *WORDS[:61]])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>",
                                                unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=64, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                   decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return fast, model


def test_a_t5_style_model_exports_and_generates_like_transformers(run_cli, tmp_path):
    """text2text-generation-with-past goes through the same encoder + cached-decoder code."""
    import torch

    folder = tmp_path / "t5"
    fast, model = make_t5(folder)
    exported = run_cli("export", folder, "--to", "onnx", "-o", tmp_path / "t5-onnx")
    assert exported.exit_code == 0, exported.stderr
    manifest = json.loads((tmp_path / "t5-onnx" / "manifest.json").read_text())
    assert manifest["options"]["task"] == "text2text-generation-with-past" and manifest["seq2seq"]["kind"] == "text"
    assert manifest["export_error"]["max_abs_error"] < 1e-4
    done = run_cli("--json", "generate", tmp_path / "t5-onnx", "--prompt", "w3 w7 w9 w1", "--max-new-tokens", "10")
    assert done.exit_code == 0, done.stderr
    ids = fast("w3 w7 w9 w1", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=10, do_sample=False)[0].tolist()[1:]  # after the start token
    expected = expected[: expected.index(1)] if 1 in expected else expected
    assert json.loads(done.stdout)["tokens"] == expected and len(expected) > 0
    assert run_cli("generate", tmp_path / "t5-onnx", "--audio", tmp_path / "x.wav").exit_code == 2
