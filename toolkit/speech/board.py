"""Bench an encoder-decoder on a board (an ssh device, an emulated ARM64 board) with the device runner.

The board has numpy and onnxruntime only, not transformers: the host computes what needs the
Hugging Face side files (a speech clip's log-mel features, or a T5 input's token ids) and the
decoder prompt, transcribes once itself for the reference tokens, and sends the encoder's inputs
with the prompt and the suppressed and end tokens in one .npz. `runner.py seq2seq` on the board
runs the three graphs greedily and returns its tokens and timings. The device time therefore
excludes the feature extraction (host-side here; a product would compute it on the device too).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from toolkit.errors import Unsupported
from toolkit.speech.folder import GRAPH_FILES

logger = logging.getLogger(__name__)

TIMEOUT_S = 1800
# the arrays `runner.py seq2seq` reads beside the encoder's inputs (runner.py imports nothing of the package)
SEQ2SEQ_KEYS = ("seq2seq_prompt", "seq2seq_suppress", "seq2seq_begin_suppress", "seq2seq_eos")
BOARD_FIELDS = ("runtime", "delegate", "load_ms", "peak_rss_mb", "rss_before_load_mb", "peak_over_baseline_mb",
                "python", "machine")


def graph_files(folder: Path) -> list[Path]:
    """The three graphs, the encoder first, and any external data files beside them."""
    extra = sorted(path for name in GRAPH_FILES for path in folder.glob(name + ".data"))
    return [folder / name for name in GRAPH_FILES] + extra


def request_arrays(seq2seq, encoder_inputs: dict, prompt: list[int]) -> dict:
    generation = seq2seq.generation
    values = (prompt, generation.get("suppress_tokens") or [], generation.get("begin_suppress_tokens") or [],
              sorted(seq2seq.eos_ids()))
    return {**encoder_inputs, **{key: np.asarray(value, dtype=np.int64) for key, value in zip(SEQ2SEQ_KEYS, values,
                                                                                               strict=True)}}


def run_on_board(folder: Path, arrays: dict, device: str, *, max_new_tokens: int, runs: int, warmup: int,
                 threads: int | None, profiles_dir=None) -> dict:
    """Push the graphs, runner.py and the request; the runner's result record plus the transport's."""
    from toolkit.devices import get_profile, run_runner

    profile = get_profile(device, profiles_dir)
    if profile.transport["type"] == "adb" and not profile.transport.get("python"):
        raise Unsupported(f"{device}: the adb transport runs LiteRT's benchmark_model, which cannot run an "
                          "encoder-decoder; bench on an ssh device or with --estimate")
    argv = ["runner.py", "seq2seq", "--model", GRAPH_FILES[0], "--inputs", "request.npz", "--runs", str(runs),
            "--warmup", str(warmup), "--new-tokens", str(max_new_tokens)]
    if threads:
        argv += ["--threads", str(threads)]
    with tempfile.TemporaryDirectory(prefix="edgeward-seq2seq-board-") as scratch:
        request = Path(scratch) / "request.npz"
        np.savez(request, **arrays)
        session, transport = run_runner(profile, device, argv, [*graph_files(folder), request], TIMEOUT_S)
    return {"profile": profile, "result": {**(session.loaded or {}), **session.result}, "transport": transport}


def bench_speech_on_board(model, audio, device: str, *, runs: int, warmup: int, threads: int | None,
                          max_new_tokens: int, profiles_dir=None) -> dict:
    """The real-time factor of a speech folder measured on `device`: its encoder and decoding time for the clip."""
    from toolkit.bench import EMULATION_NOTE, device_record
    from toolkit.speech.bench import model_record
    from toolkit.speech.transcribe import SpeechModel, read_clip

    folder = Path(model)
    speech = SpeechModel(folder, threads)
    samples = read_clip(audio, speech.rate)
    features = speech.features(samples)
    prompt, host_tokens, _ = speech.greedy(features, max_new_tokens)
    budget = min(max_new_tokens, speech.max_target - len(prompt))
    done = run_on_board(folder, request_arrays(speech, {"input_features": features}, prompt), device,
                        max_new_tokens=budget, runs=runs, warmup=warmup, threads=threads, profiles_dir=profiles_dir)
    result, profile = done["result"], done["profile"]
    audio_seconds = len(samples) / speech.rate
    processing_ms = float(result["processing_ms_p50"])
    record = {"model": model_record(folder, "speech"), "device": device_record(profile), "estimate": False,
              "mode": "measured", "latency_ms": {"p50": processing_ms, "min": result["processing_ms_min"]},
              "speech": {"audio": str(audio), "audio_seconds": round(audio_seconds, 3), "runs": runs, "warmup": warmup,
                         "threads": threads, "tokens": len(result["tokens"]),
                         "tokens_match_host": result["tokens"] == host_tokens,
                         "encoder_ms_p50": result["encoder_ms_p50"], "processing_ms_p50": processing_ms,
                         "real_time_factor": round(audio_seconds * 1000 / processing_ms, 3),
                         "features": "computed on the host, not timed on the device"},
              "board": {**{key: result.get(key) for key in BOARD_FIELDS}, "transport": done["transport"]}}
    if profile.emulated:
        record.update(emulated=True, timing="emulated", timing_note=EMULATION_NOTE)
    return record
