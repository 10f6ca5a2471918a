"""Bench a speech model on this host: the real-time factor (audio seconds per processing second).

One clip is transcribed `runs` times after `warmup` untimed runs (features, encoder, greedy
decoding through the cache); the record gives the p50 processing time, the clip's length and
their ratio. The break-even turns it into a time per request: audio seconds / real-time factor.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

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
    folder = Path(model)
    size = sum(p.stat().st_size for p in folder.glob("*.onnx*"))
    return {"model": {"path": str(folder), "format": "onnx", "size_bytes": size, "kind": "speech"},
            "device": {"name": "localhost", "kind": "host"}, "estimate": False,
            "latency_ms": {"p50": round(processing_ms, 3), "min": round(min(timings) * 1000, 3)},
            "speech": {"audio": str(audio), "audio_seconds": round(audio_seconds, 3), "runs": runs,
                       "warmup": warmup, "threads": threads, "tokens": tokens,
                       "processing_ms_p50": round(processing_ms, 3),
                       "real_time_factor": round(audio_seconds * 1000 / processing_ms, 3)}}


def human_summary(record: dict) -> str:
    from toolkit.common.units import human_bytes

    speech = record["speech"]
    return "\n".join([
        f"model   {record['model']['path']} (speech, {human_bytes(record['model']['size_bytes'])})",
        f"device  {record['device']['name']} (measured, {speech['runs']} runs after {speech['warmup']} warm-up)",
        f"audio   {speech['audio_seconds']} s ({speech['audio']}), {speech['tokens']} tokens out",
        f"time    {speech['processing_ms_p50']:.1f} ms p50 per clip",
        f"real-time factor  {speech['real_time_factor']}x (audio seconds per processing second)",
    ])
