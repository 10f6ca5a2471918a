"""Quantized encoder-decoders (issue 15 item 8): Whisper and T5 folders through quantize, generate,
validate and bench, and their estimates for device profiles.

Every graph of the export (encoder, first-step decoder, decoder with past) is quantized with the
same mode into a folder of the same layout; the figures asserted are real: file sizes, token
agreement of the quantized transcripts (or T5 outputs) with the float export's on synthesised audio
(chirps and harmonics written with `wave`, no downloads) or a small text file, and timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_speech import RATE, make_t5, make_whisper, write_pcm16
from tests.testbed import PROFILES, STATE, boards_started

GRAPHS = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
MODES = ("dynamic-int8", "int4-weight", "fp16")
AGREEMENT_BAR = 0.9  # int8 and fp16 of the float export; int4 on a random tiny model is only reported
TEXT = "w3 w7 w9 w1\nw10 w11 w12\nw5 w5 w5 w40 w41\nw20 w30 w50 w60 w2\n"


def write_speechlike_wav(path: Path, seconds: float, base: float, seed: int) -> Path:
    """A rising chirp plus three harmonics of `base` under a syllable-rate envelope, with a little noise."""
    times = np.arange(int(seconds * RATE)) / RATE
    chirp = np.sin(2 * np.pi * (200 * times + 600 * times**2 / seconds))
    harmonics = sum(np.sin(2 * np.pi * base * k * times) / k for k in (1, 2, 3))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * times)
    noise = np.random.default_rng(seed).standard_normal(times.size) * 0.02
    samples = np.clip(0.2 * (chirp + harmonics) * envelope + noise, -1, 1) * 32767
    return write_pcm16(path, samples)


@pytest.fixture(scope="module")
def whisper_variants(tmp_path_factory) -> dict:
    """The Hugging Face folder, its float export and one quantized folder per mode."""
    from toolkit.export import export
    from toolkit.speech.quantize import quantize_seq2seq

    root = tmp_path_factory.mktemp("speech-q")
    folder = make_whisper(root / "whisper")
    variants = {"hf": folder, "float": export(folder, "onnx", root / "whisper-onnx").out_dir}
    for mode in MODES:
        variants[mode] = quantize_seq2seq(variants["float"], mode, root / f"whisper-{mode}").out_dir
    return variants


@pytest.fixture(scope="module")
def speechlike_clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("speechlike")
    write_speechlike_wav(folder / "one.wav", 2.0, 150, 1)
    write_speechlike_wav(folder / "two.wav", 3.5, 210, 2)
    return folder


@pytest.fixture(scope="module")
def t5_variants(tmp_path_factory) -> dict:
    from toolkit.export import export
    from toolkit.speech.quantize import quantize_seq2seq

    root = tmp_path_factory.mktemp("t5-q")
    make_t5(root / "t5")
    variants = {"hf": root / "t5", "float": export(root / "t5", "onnx", root / "t5-onnx").out_dir}
    for mode in ("dynamic-int8", "int4-weight"):
        variants[mode] = quantize_seq2seq(variants["float"], mode, root / f"t5-{mode}").out_dir
    (root / "inputs.txt").write_text(TEXT)
    variants["text"] = root / "inputs.txt"
    return variants


def test_quantize_cli_writes_every_graph_smaller_in_the_same_layout(whisper_variants, run_cli, tmp_path):
    out = tmp_path / "w-int8"
    done = run_cli("--json", "quantize", whisper_variants["float"], "--mode", "dynamic-int8", "-o", out)
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)
    names = {path.name for path in out.iterdir()}
    assert set(GRAPHS) | {"manifest.json", "config.json", "preprocessor_config.json", "tokenizer.json",
                          "generation_config.json"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "quantize" and manifest["mode"] == "dynamic-int8"
    assert manifest["seq2seq"]["kind"] == "speech" and set(manifest["graphs"]) == set(GRAPHS)
    for name in GRAPHS:
        assert manifest["graphs"][name]["bytes"] < manifest["graphs"][name]["float_bytes"]
        import onnx

        ops = {node.op_type for node in onnx.load(str(out / name)).graph.node}
        assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}, name
    assert result["size_bytes"] == manifest["size"]["bytes"] < result["float_size_bytes"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_smaller_and_transcribes(whisper_variants, speechlike_clips, mode, run_cli):
    manifest = json.loads((whisper_variants[mode] / "manifest.json").read_text())
    assert manifest["size"]["bytes"] < manifest["size"]["float_bytes"]
    assert all(graph["bytes"] < graph["float_bytes"] for graph in manifest["graphs"].values())
    done = run_cli("--json", "generate", whisper_variants[mode], "--audio", speechlike_clips / "two.wav",
                   "--max-new-tokens", "16")
    assert done.exit_code == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["audio_seconds"] == 3.5 and len(record["tokens"]) > 0


@pytest.mark.parametrize("mode", MODES)
def test_validate_reports_token_agreement_against_the_float_export(whisper_variants, speechlike_clips, mode,
                                                                   run_cli, tmp_path):
    bar = AGREEMENT_BAR if mode != "int4-weight" else 0.0
    done = run_cli("--json", "validate", whisper_variants[mode], "--reference", whisper_variants["float"],
                   "--data", speechlike_clips, "--min-agreement", bar, "-o", tmp_path / "report")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kind"] == "speech" and report["clips"] == 2
    assert [clip["reference_tokens"] for clip in report["per_clip"]] == [63, 63]  # the tiny model never stops
    assert report["token_agreement"] >= bar and 0 <= report["exact_match_rate"] <= 1
    if mode != "int4-weight":
        assert report["token_agreement"] >= AGREEMENT_BAR
    strict = run_cli("validate", whisper_variants[mode], "--reference", whisper_variants["float"],
                     "--data", speechlike_clips, "--min-agreement", "1.0")
    assert strict.exit_code == (0 if report["token_agreement"] == 1.0 else 1), strict.stderr


def test_quantized_speech_benches_a_real_time_factor(whisper_variants, speechlike_clips, run_cli):
    done = run_cli("--json", "bench", whisper_variants["int4-weight"], "--audio", speechlike_clips / "one.wav",
                   "--runs", "2", "--warmup", "1")
    assert done.exit_code == 0, done.stderr
    speech = json.loads(done.stdout)["speech"]
    assert speech["audio_seconds"] == 2.0 and speech["processing_ms_p50"] > 0 and speech["real_time_factor"] > 0


def test_quantize_refusals(whisper_variants, run_cli, tmp_path):
    static = run_cli("quantize", whisper_variants["float"], "--mode", "static-int8", "-o", tmp_path / "s")
    assert static.exit_code == 3 and "calibration" in static.stderr and not (tmp_path / "s").exists()
    twice = run_cli("quantize", whisper_variants["dynamic-int8"], "--mode", "fp16", "-o", tmp_path / "t")
    assert twice.exit_code == 2 and "already quantized" in twice.stderr
    data = run_cli("quantize", whisper_variants["float"], "--mode", "fp16", "--calibration", "x.npz",
                   "-o", tmp_path / "c")
    assert data.exit_code == 2
    exists = run_cli("quantize", whisper_variants["float"], "--mode", "fp16", "-o", whisper_variants["fp16"])
    assert exists.exit_code == 2


def test_the_library_quantize_refuses_a_whole_encoder_decoder_folder(whisper_variants, tmp_path):
    from toolkit.errors import BadInput
    from toolkit.quantize import quantize

    with pytest.raises(BadInput, match="encoder-decoder"):
        quantize(whisper_variants["float"], "fp16", tmp_path / "one-graph")
    assert not (tmp_path / "one-graph").exists()


def test_speech_estimate_for_a_device_profile(whisper_variants, speechlike_clips, run_cli):
    """--estimate gives the profile's roofline, marked as an estimate; a measured bench on a device that
    cannot be reached says so (exit 4) and points to --estimate."""
    done = run_cli("--json", "bench", whisper_variants["float"], "--device", "raspberry-pi-5", "--estimate",
                   "--audio", speechlike_clips / "two.wav")
    assert done.exit_code == 0, done.stderr
    record = json.loads(done.stdout)
    speech = record["speech"]
    assert record["estimate"] is True and record["device"]["name"] == "raspberry-pi-5" and speech["estimate"]
    assert speech["encoder_ms"] > 0 and speech["decoder_ms_per_token"] > 0 and speech["fits"]
    expected_ms = speech["encoder_ms"] + speech["first_step_ms"] + (speech["new_tokens"] - 1) * speech[
        "decoder_ms_per_token"]
    assert speech["request_ms"] == pytest.approx(expected_ms, rel=1e-3)
    assert speech["real_time_factor"] == pytest.approx(3500 / speech["request_ms"], rel=1e-3)
    unreachable = run_cli("bench", whisper_variants["float"], "--device", "iphone-15-pro",
                          "--audio", speechlike_clips / "two.wav")
    assert unreachable.exit_code == 4 and "--estimate" in unreachable.stderr


def bench_on_board(run_cli, folder: Path, clip: Path, device: str, runs: int, warmup: int) -> dict:
    done = run_cli("--json", "bench", folder, "--device", device, "--profiles", PROFILES, "--audio", clip,
                   "--runs", runs, "--warmup", warmup)
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.ssh
@pytest.mark.skipif(not boards_started("ssh-testbed"), reason=f"the ssh test bed is not running (scripts/ssh-testbed "
                                                             f"start; state {STATE})")
@pytest.mark.parametrize("mode", ["float", "dynamic-int8"])
def test_speech_real_time_factor_on_the_ssh_board(whisper_variants, speechlike_clips, mode, run_cli):
    """runner.py seq2seq decodes on the board the tokens the host decodes; its timings give the factor."""
    from toolkit.speech.transcribe import transcribe

    clip = speechlike_clips / "one.wav"
    record = bench_on_board(run_cli, whisper_variants[mode], clip, "ssh-testbed", 2, 1)
    speech = record["speech"]
    assert record["device"]["name"] == "ssh-testbed" and record["estimate"] is False and "emulated" not in record
    assert speech["tokens_match_host"] is True
    assert speech["tokens"] == len(transcribe(whisper_variants[mode], clip).tokens) > 0
    assert 0 < speech["encoder_ms_p50"] < speech["processing_ms_p50"]
    assert speech["real_time_factor"] == pytest.approx(2000 / speech["processing_ms_p50"], rel=1e-3)
    assert record["board"]["transport"]["type"] == "ssh" and record["board"]["peak_rss_mb"] > 0


@pytest.mark.slow
@pytest.mark.arm64
@pytest.mark.skipif(not boards_started("arm64-cortex-a76"), reason=f"the emulated ARM64 board is not started "
                                                                  f"(scripts/arm64-testbed start; profiles in {PROFILES})")
def test_speech_on_an_emulated_arm64_board_is_marked_emulated(whisper_variants, speechlike_clips, run_cli):
    from toolkit.speech.bench import human_summary

    record = bench_on_board(run_cli, whisper_variants["dynamic-int8"], speechlike_clips / "one.wav",
                            "arm64-cortex-a76", 1, 0)
    assert record["board"]["machine"] == "aarch64" and record["emulated"] is True
    assert record["speech"]["real_time_factor"] > 0 and record["speech"]["tokens"] > 0
    assert "EMULATED" in human_summary(record) and "emulated real-time factor" in human_summary(record)


def test_t5_quantized_validates_against_the_float_and_transformers(t5_variants, run_cli):
    vs_hf = run_cli("--json", "validate", t5_variants["float"], "--reference", t5_variants["hf"],
                    "--data", t5_variants["text"])
    assert vs_hf.exit_code == 0, vs_hf.stderr
    report = json.loads(vs_hf.stdout)
    assert report["kind"] == "text" and report["inputs"] == 4
    assert report["token_agreement"] == 1.0 and report["exact_match_rate"] == 1.0
    for mode in ("dynamic-int8", "int4-weight"):
        manifest = json.loads((t5_variants[mode] / "manifest.json").read_text())
        assert manifest["seq2seq"]["kind"] == "text" and manifest["size"]["bytes"] < manifest["size"]["float_bytes"]
        done = run_cli("--json", "validate", t5_variants[mode], "--reference", t5_variants["float"],
                       "--data", t5_variants["text"], "--min-agreement", "0")
        assert done.exit_code == 0, done.stderr
        quantized = json.loads(done.stdout)
        assert quantized["inputs"] == 4 and sum(item["reference_tokens"] for item in quantized["per_input"]) > 0
        if mode == "dynamic-int8":
            assert quantized["token_agreement"] >= AGREEMENT_BAR
    wav = run_cli("validate", t5_variants["float"], "--reference", t5_variants["hf"], "--data", "nowhere.txt")
    assert wav.exit_code == 2


def test_t5_bench_times_the_encoder_and_decode(t5_variants, run_cli, tmp_path):
    out = tmp_path / "t5-bench.json"
    done = run_cli("--json", "bench", t5_variants["int4-weight"], "--prompt-tokens", "12", "--new-tokens", "10",
                   "--runs", "3", "--warmup", "1", "-o", out)
    assert done.exit_code == 0, done.stderr
    figures = json.loads(out.read_text())["seq2seq"]
    assert figures["prompt_tokens"] == 12 and figures["new_tokens"] == 10
    assert 0 < figures["encoder_ms_p50"] < figures["first_token_ms_p50"] <= figures["request_ms_p50"]
    assert figures["decode_tokens_per_s"] > 0
    assert figures["decode_ms_per_token"] == pytest.approx(1000 / figures["decode_tokens_per_s"], rel=1e-2)
    estimate = run_cli("--json", "bench", t5_variants["float"], "--device", "raspberry-pi-5", "--estimate",
                       "--new-tokens", "10")
    assert estimate.exit_code == 0, estimate.stderr
    estimated = json.loads(estimate.stdout)["seq2seq"]
    assert estimated["estimate"] and estimated["decode_tokens_per_s"] > 0 and estimated["request_ms"] > 0
    assert run_cli("bench", t5_variants["float"], "--audio", tmp_path / "x.wav").exit_code == 2
