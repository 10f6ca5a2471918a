"""Estimate an encoder-decoder's time on a device profile: a roofline of each graph at its shapes.

A request costs one encoder pass, one first decoder step over the decoder prompt, and one cached
step per further token. Each is `toolkit.bench.estimate`'s roofline (per op, max of FLOPs / peak
and bytes moved / memory bandwidth) with the graph's symbolic dimensions filled: the encoder's
sequence (Whisper: its fixed 30 s window, so a short clip costs as much encoder time as a long
one), the prompt, and a cache half full on average. Marked as an estimate: no device ran it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from toolkit.speech.folder import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE

logger = logging.getLogger(__name__)

WHY = ("roofline of each graph (encoder once, first decoder step, then one cached step per token with the cache "
       "half full on average): a lower bound that ignores per-op dispatch and assumes peak throughput")


def graph_shapes(path: Path, sizes: dict[str, int]) -> dict[str, list[int]]:
    """Every input's shape with its symbolic dimensions named in `sizes` filled (others: 1)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {}
    for item in graph.input:
        dims = item.type.tensor_type.shape.dim
        shapes[item.name] = [dim.dim_value if dim.HasField("dim_value") else sizes.get(dim.dim_param, 1)
                             for dim in dims]
    return shapes


def estimate_seq2seq(folder, profile, *, prompt: int, new_tokens: int, source_tokens: int | None = None,
                     audio_seconds: float | None = None) -> dict:
    """Estimated time of one request on `profile`: `prompt` decoder-prompt tokens, `new_tokens` generated;
    `source_tokens` is a text model's input length; `audio_seconds` (speech) gives the real-time factor."""
    from toolkit.bench.estimate import estimate
    from toolkit.speech.transcribe import SpeechModel

    folder = Path(folder)
    model = SpeechModel(folder)
    config = model.config
    if model.speech:
        frames = int(config.get("max_source_positions") or 1500)
        encoder_sizes = {}
        encoder_length = frames  # the encoder's output positions for its fixed window
    else:
        encoder_length = int(source_tokens or 32)
        encoder_sizes = {"encoder_sequence_length": encoder_length}
    cached = prompt + max(0, new_tokens - 1) // 2
    encoder = estimate(folder / ENCODER_FILE, profile, graph_shapes(folder / ENCODER_FILE, encoder_sizes))
    first = estimate(folder / DECODER_FILE, profile, graph_shapes(folder / DECODER_FILE, {
        "decoder_sequence_length": prompt, "encoder_sequence_length": encoder_length}))
    step = estimate(folder / DECODER_WITH_PAST_FILE, profile, graph_shapes(folder / DECODER_WITH_PAST_FILE, {
        "decoder_sequence_length": 1, "past_decoder_sequence_length": cached,
        "encoder_sequence_length": encoder_length, "encoder_sequence_length_out": encoder_length}))
    if encoder["latency"] is None:
        from toolkit.errors import Unsupported

        raise Unsupported(f"{profile.name}: its profile gives no peak throughput to estimate from")
    encoder_ms = encoder["latency"]["latency_ms"]
    first_ms = first["latency"]["latency_ms"]
    step_ms = step["latency"]["latency_ms"]
    total_ms = encoder_ms + first_ms + max(0, new_tokens - 1) * step_ms
    figures = {"estimate": True, "why": WHY, "accelerator": encoder["latency"]["accelerator"],
               "precision": encoder["latency"]["precision"], "encoder_ms": round(encoder_ms, 4),
               "first_step_ms": round(first_ms, 4), "decoder_ms_per_token": round(step_ms, 4),
               "prompt_tokens": prompt, "new_tokens": new_tokens, "request_ms": round(total_ms, 4),
               "decode_tokens_per_s": round(1000 / step_ms, 2) if step_ms else None,
               "fits": all(part["fit"]["fits"] for part in (encoder, first, step)),
               "weight_bytes": sum(part["weight_bytes"] for part in (encoder, first, step))}
    if audio_seconds is not None:
        figures.update(audio_seconds=round(audio_seconds, 3),
                       real_time_factor=round(audio_seconds * 1000 / total_ms, 3) if total_ms else None)
    return figures
