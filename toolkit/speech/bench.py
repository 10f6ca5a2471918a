"""Bench an encoder-decoder on this host, or estimate it for a device profile.

Speech: one clip is transcribed `runs` times after `warmup` untimed runs (features, encoder, greedy
decoding through the cache); the record gives the p50 processing time, the clip's length and
their ratio, the real-time factor. The break-even turns it into a time per request: audio seconds
/ real-time factor. T5-style text: a seeded random input of `prompt_tokens` tokens is encoded and
`new_tokens` tokens are decoded greedily with no end-of-sequence stop: the encoder's time and the
decoder's tokens per second. `estimate_record` gives the same figures from a device profile's roofline.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput
from toolkit.speech.transcribe import DEFAULT_MAX_NEW_TOKENS, SpeechModel, read_clip

logger = logging.getLogger(__name__)


def bench_speech(model, audio, *, runs: int = 5, warmup: int = 1, threads: int | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
    """Measure `model` (an exported speech folder) transcribing the WAV file `audio`; a JSON-ready record."""
    speech = SpeechModel(model, threads)
    samples = read_clip(audio, speech.rate)
    audio_seconds = len(samples) / speech.rate
    timings, tokens = [], 0
    for run in range(warmup + runs):
        started = time.perf_counter()
        transcript = speech.transcribe_samples(samples, max_new_tokens)
        if run >= warmup:
            timings.append(time.perf_counter() - started)
            tokens = len(transcript.tokens)
    processing_ms = float(np.median(timings)) * 1000
    return {"model": model_record(Path(model), "speech"),
            "device": {"name": "localhost", "kind": "host"}, "estimate": False,
            "latency_ms": {"p50": round(processing_ms, 3), "min": round(min(timings) * 1000, 3)},
            "speech": {"audio": str(audio), "audio_seconds": round(audio_seconds, 3), "runs": runs,
                       "warmup": warmup, "threads": threads, "tokens": tokens,
                       "processing_ms_p50": round(processing_ms, 3),
                       "real_time_factor": round(audio_seconds * 1000 / processing_ms, 3)}}


def model_record(folder: Path, kind: str) -> dict:
    size = sum(p.stat().st_size for p in folder.glob("*.onnx*"))
    return {"path": str(folder), "format": "onnx", "size_bytes": size, "kind": kind}


def bench_seq2seq_text(model, *, prompt_tokens: int = 32, new_tokens: int = 32, runs: int = 5, warmup: int = 1,
                       threads: int | None = None) -> dict:
    """Time a T5-style model (an exported text encoder-decoder folder): encoder ms and decode tokens/s."""
    seq2seq = SpeechModel(model, threads)
    if seq2seq.speech:
        raise BadInput(f"{model} is a speech model: bench it on a clip with --audio FILE.wav")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, int(seq2seq.config.get("vocab_size") or 2), size=prompt_tokens).tolist()
    new_tokens = min(new_tokens, seq2seq.max_target - 1)
    encoder_ms, first_ms, rates, totals = [], [], [], []
    for run in range(warmup + runs):
        started = time.perf_counter()
        hidden, mask = seq2seq.encode_text(ids)
        encoded = time.perf_counter()
        prompt = seq2seq.decoder_prompt(hidden)
        logits, cache = seq2seq.first_step(prompt, hidden, mask)
        token = int(np.argmax(logits[-1]))
        first = time.perf_counter()
        for _ in range(new_tokens - 1):
            token = int(np.argmax(seq2seq.next_step(token, cache, mask)))
        done = time.perf_counter()
        if run >= warmup:
            encoder_ms.append((encoded - started) * 1000)
            first_ms.append((first - started) * 1000)
            totals.append((done - started) * 1000)
            if new_tokens > 1:
                rates.append((new_tokens - 1) / (done - first))
    request_ms = float(np.median(totals))
    rate = float(np.median(rates)) if rates else None
    return {"model": model_record(Path(model), "seq2seq-text"), "device": {"name": "localhost", "kind": "host"},
            "estimate": False, "latency_ms": {"p50": round(request_ms, 3), "min": round(min(totals), 3)},
            "seq2seq": {"kind": "text", "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "runs": runs,
                        "warmup": warmup, "threads": threads,
                        "encoder_ms_p50": round(float(np.median(encoder_ms)), 3),
                        "first_token_ms_p50": round(float(np.median(first_ms)), 3),
                        "decode_tokens_per_s": round(rate, 2) if rate else None,
                        "decode_ms_per_token": round(1000 / rate, 3) if rate else None,
                        "request_ms_p50": round(request_ms, 3)}}


def estimate_record(model, profile, *, audio=None, prompt_tokens: int = 32, new_tokens: int = 32,
                    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
    """Estimated figures of an encoder-decoder on `profile`. Speech: the clip `audio` is transcribed here
    once for its length and its token count (the work the device would do); text: the given lengths."""
    from toolkit.bench import device_record
    from toolkit.speech.estimate import estimate_seq2seq

    seq2seq = SpeechModel(model)
    folder = Path(model)
    if seq2seq.speech:
        samples = read_clip(audio, seq2seq.rate)
        transcript = seq2seq.transcribe_samples(samples, max_new_tokens)
        figures = estimate_seq2seq(folder, profile, prompt=len(transcript.prompt), new_tokens=len(transcript.tokens) + 1,
                                   audio_seconds=len(samples) / seq2seq.rate)
        figures["audio"] = str(audio)
        figures["tokens_from"] = "a greedy transcription of the clip on this host (+1 for end-of-text)"
        kind, section = "speech", "speech"
    else:
        figures = estimate_seq2seq(folder, profile, prompt=1, new_tokens=new_tokens, source_tokens=prompt_tokens)
        kind, section = "seq2seq-text", "seq2seq"
    return {"model": model_record(folder, kind), "device": device_record(profile), "estimate": True,
            "mode": "estimate", "latency_ms": {"p50": figures["request_ms"]}, section: figures}


def estimate_summary(record: dict) -> str:
    figures = record.get("speech") or record["seq2seq"]
    lines = [f"model   {record['model']['path']} ({record['model']['kind']})",
             f"device  {record['device']['name']} ESTIMATE ({figures['why']})",
             f"encoder {figures['encoder_ms']:.3f} ms, first step {figures['first_step_ms']:.3f} ms, "
             f"{figures['decoder_ms_per_token']:.4f} ms per further token ({figures['new_tokens']} tokens)",
             f"request {figures['request_ms']:.3f} ms estimated"
             + ("" if figures["fits"] else " (DOES NOT FIT the device's memory)")]
    if figures.get("real_time_factor") is not None:
        lines.append(f"real-time factor  {figures['real_time_factor']}x estimated "
                     f"({figures['audio_seconds']} s clip)")
    return "\n".join(lines)


def text_summary(record: dict) -> str:
    from toolkit.common.units import human_bytes

    figures = record["seq2seq"]
    return "\n".join([
        f"model   {record['model']['path']} (text encoder-decoder, {human_bytes(record['model']['size_bytes'])})",
        f"device  {record['device']['name']} (measured, {figures['runs']} runs after {figures['warmup']} warm-up)",
        f"encoder {figures['encoder_ms_p50']:.2f} ms p50 for {figures['prompt_tokens']} input tokens; "
        f"first token {figures['first_token_ms_p50']:.2f} ms",
        f"decode  {figures['decode_tokens_per_s']} tokens/s ({figures['new_tokens']} tokens, no stop at end-of-text)",
    ])


def human_summary(record: dict) -> str:
    from toolkit.common.units import human_bytes

    if record.get("estimate"):
        return estimate_summary(record)
    if "seq2seq" in record:
        return text_summary(record)
    speech = record["speech"]
    emulated = record.get("timing") == "emulated"
    how = "EMULATED: timings are QEMU's, not the device's" if emulated else "measured"
    lines = [
        f"model   {record['model']['path']} (speech, {human_bytes(record['model']['size_bytes'])})",
        f"device  {record['device']['name']} ({how}, {speech['runs']} runs after {speech['warmup']} warm-up)",
        f"audio   {speech['audio_seconds']} s ({speech['audio']}), {speech['tokens']} tokens out",
        f"time    {speech['processing_ms_p50']:.1f} ms p50 per clip",
        f"{'emulated ' if emulated else ''}real-time factor  {speech['real_time_factor']}x "
        "(audio seconds per processing second)",
    ]
    if "tokens_match_host" in speech:
        lines.append(f"board   encoder {speech['encoder_ms_p50']:.1f} ms p50; features computed on the host; tokens "
                     + ("equal the host's" if speech["tokens_match_host"] else "DIFFER from the host's"))
    return "\n".join(lines)
