"""`edgeward bench MODEL [--device NAME] [--runs N] [--warmup N] [--threads N] [--estimate]`."""

from __future__ import annotations

import click


@click.command(epilog="""\b
Examples:
  edgeward bench exported/digits-onnx
  edgeward bench model.tflite --device ssh-testbed --runs 200 --warmup 20
  edgeward bench model.onnx --device raspberry-pi-5 --estimate
  edgeward bench silero_vad.onnx --device localhost --data vad.npz
  edgeward --json bench model.tflite --device localhost -o bench.json
  edgeward bench exported/distilbert-onnx --seq-len 256 --max-fallback 5
  edgeward bench exported/vit-onnx --shapes pixel_values=1x3x224x224 --compare before.json
  edgeward bench exported/whisper-onnx --audio clip.wav
  edgeward bench exported/whisper-int8 --audio clip.wav --device ssh-testbed     # runner.py seq2seq
  edgeward bench exported/whisper-onnx --audio clip.wav --device raspberry-pi-5 --estimate
  edgeward bench exported/t5-onnx --prompt-tokens 32 --new-tokens 32           # encoder ms, tokens/s
  edgeward bench exported/qwen-int4 --device ssh-testbed --prompt-tokens 64 --new-tokens 64
  edgeward bench exported/qwen-int4 --device raspberry-pi-5 --estimate

\b
Measured runs copy the model and runner.py to the device, run it with the device's
Python and runtime, and report p50/p90/p99/mean/std, load time, first inference, peak
RSS, the delegate actually used, where each op ran (--max-fallback: exit 1 when more than
PCT of the work ran outside the delegate / preferred provider), the CPU governor, clock and
temperature, and a drift flag. Shapes come from --shapes, --data, the export's manifest or
the Hugging Face config (--seq-len for token inputs); the report says which. --estimate
needs no device: a roofline from the graph's FLOPs and bytes and the profile's peaks (says
compute- or memory-bound), calibrated by the measured benches on that device, else on devices
and hosts of its CPU family (stored in the user's config folder), and a fit check (exit 1 if the model does not fit). Devices on adb run LiteRT's
benchmark_model (tested on recorded output and against a test adb stand-in: no phone is
attached). On an emulated board (emulated: true) timings are labelled EMULATED and never priced.
Exit 4 on device faults; a run cut short writes -o marked "complete": false.
An exported language model (a folder with model.onnx, config and tokenizer) is timed for
time to first token and decode tokens/s: on this host, or on an ssh / emulated ARM64 board
(runner.py lm, the same decode loop; greedy tokens come back); --estimate gives decode from
the profile's memory bandwidth (every weight byte + the KV cache per token) and time to first
token from its compute (2 x parameters x prompt tokens FLOPs), marked as estimates.
An exported encoder-decoder: Whisper gives the real-time factor of --audio (on this host, or on an
ssh / emulated ARM64 board through runner.py seq2seq, features computed on the host), T5 the encoder
time and decode tokens/s (this host); --estimate sums a roofline of each graph.""")
@click.argument("model", type=click.Path())
@click.option("--device", default="localhost", show_default=True, help="A device profile name (edgeward devices list).")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1), help="Measured runs.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=0), help="Warm-up runs, not timed.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="Runtime threads (default: the runtime's).")
@click.option("--estimate", is_flag=True, help="Estimate fit and latency from the profile instead of measuring.")
@click.option("--profiles", "profiles_dir", type=click.Path(file_okay=False), help="A folder of extra device profiles.")
@click.option("--benchmark-binary", default=None, help="adb devices: benchmark_model on the device or a local file.")
@click.option("--data", metavar="DATA", default=None,
              help="Inputs to time (.npz, one array per model input; its first example is run). Default: random.")
@click.option("--shapes", multiple=True, metavar="NAME=AxB",
              help="Input shapes to time (repeatable), e.g. input_ids=1x128.")
@click.option("--seq-len", type=click.IntRange(min=1), default=None,
              help="Sequence length of token inputs (default 128, capped by the config's positions).")
@click.option("--max-fallback", type=click.FloatRange(0, 100), default=None, metavar="PCT",
              help="Gate: at most PCT percent of the work outside the accelerator (exit 1).")
@click.option("--compare", type=click.Path(exists=True, dir_okay=False), default=None, metavar="JSON",
              help="An earlier bench -o result: ratios, and warnings if governor or throttling differ.")
@click.option("--no-calibrate", is_flag=True, help="Do not store this run as a calibration point.")
@click.option("--prompt-tokens", default=32, show_default=True, type=click.IntRange(min=1),
              help="Language models: prompt length for the time to first token.")
@click.option("--new-tokens", default=32, show_default=True, type=click.IntRange(min=1),
              help="Language models: tokens decoded per run (decode tokens/s).")
@click.option("--audio", type=click.Path(dir_okay=False), default=None,
              help="Speech models: the WAV clip to transcribe (real-time factor = its seconds / processing seconds).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the result JSON here.")
def command(model, device, runs, warmup, threads, estimate, profiles_dir, benchmark_binary, data, shapes, seq_len,
            max_fallback, compare, no_calibrate, prompt_tokens, new_tokens, output, audio=None) -> None:
    """Measure or estimate latency and memory of MODEL on a device."""
    from toolkit.lm.folder import is_lm_artifact
    from toolkit.speech.folder import is_seq2seq_artifact

    if is_seq2seq_artifact(model):  # Whisper (real-time factor on a clip) or T5 (encoder ms, tokens/s)
        _bench_speech(model, device, runs, warmup, threads, estimate, audio, output, prompt_tokens, new_tokens,
                      profiles_dir)
        return
    if audio is not None:
        from toolkit.errors import BadInput

        raise BadInput("--audio: for a speech model (an exported Whisper folder) only")
    if is_lm_artifact(model):
        _bench_language_model(model, device, runs, warmup, threads, estimate, prompt_tokens, new_tokens, output,
                              profiles_dir)
        return
    from toolkit.artifacts import atomic_write_json
    from toolkit.bench import bench, check_fit, human_summary
    from toolkit.bench.placement import check_fallback
    from toolkit.console import emit, info
    from toolkit.errors import DeviceError

    try:
        record = bench(model, device=device, runs=runs, warmup=warmup, threads=threads, estimate=estimate,
                       profiles_dir=profiles_dir, benchmark_binary=benchmark_binary, data=data, shapes=shapes,
                       seq_len=seq_len, calibrate=not no_calibrate)
    except DeviceError as error:
        partial = getattr(error, "partial", None)
        if partial is not None and output:
            atomic_write_json(output, partial)
            info(f"partial result (complete: false) written to {output}")
        raise
    if compare and not estimate:
        record["comparison"] = compare_with(record, compare)
    if output:
        atomic_write_json(output, record)
        info(f"wrote {output}")
    emit(record, human_summary(record))
    if estimate:
        check_fit(record)
    else:
        check_fallback(record.get("placement"), max_fallback, device)


def compare_with(record: dict, path: str) -> dict:
    import json

    from toolkit.bench.conditions import comparison
    from toolkit.errors import BadInput

    try:
        previous = json.loads(open(path).read())
    except (OSError, ValueError) as error:
        raise BadInput(f"--compare {path}: not a bench result JSON ({error})") from None
    if not isinstance(previous, dict) or "latency_ms" not in previous:
        raise BadInput(f"--compare {path}: not a bench result JSON (no latency_ms)")
    return comparison(record, previous)


def _bench_language_model(model, device, runs, warmup, threads, estimate, prompt_tokens, new_tokens, output,
                          profiles_dir):
    """Time to first token, decode tokens/s and peak memory of an exported language model: measured on
    this host or a device (ssh, emulated ARM64), or estimated from a device profile."""
    from toolkit.artifacts import atomic_write_json
    from toolkit.console import emit, info
    from toolkit.lm.bench import bench_lm, human_summary

    record = bench_lm(model, prompt_tokens=prompt_tokens, new_tokens=new_tokens, runs=min(runs, 10),
                      warmup=min(warmup, 1), threads=threads, device=device, estimate=estimate,
                      profiles_dir=profiles_dir)
    if output:
        atomic_write_json(output, record)
        info(f"wrote {output}")
    emit(record, human_summary(record))


def _bench_speech(model, device, runs, warmup, threads, estimate, audio, output, prompt_tokens=32, new_tokens=32,
                  profiles_dir=None):
    """An exported encoder-decoder: a speech model's real-time factor on a WAV clip, a T5-style model's encoder
    time and decode tokens/s; measured on this host, or estimated from a device profile (--estimate)."""
    from toolkit.artifacts import atomic_write_json
    from toolkit.console import emit, info
    from toolkit.errors import BadInput, Unsupported
    from toolkit.speech.bench import bench_seq2seq_text, bench_speech, estimate_record, human_summary
    from toolkit.speech.folder import is_speech_artifact
    from toolkit.speech.transcribe import DEFAULT_MAX_NEW_TOKENS

    speech = is_speech_artifact(model)
    if speech and audio is None:
        raise BadInput("a speech model is benched on a clip: give --audio FILE.wav")
    if not speech and audio is not None:
        raise BadInput("--audio: for a speech model (an exported Whisper folder) only")
    if estimate:
        from toolkit.devices import get_profile

        record = estimate_record(model, get_profile(device, profiles_dir), audio=audio, prompt_tokens=prompt_tokens,
                                 new_tokens=new_tokens)
    elif device != "localhost" and speech:  # runner.py seq2seq on an ssh / emulated ARM64 board
        from toolkit.speech.board import bench_speech_on_board

        record = bench_speech_on_board(model, audio, device, runs=min(runs, 20), warmup=min(warmup, 2),
                                       threads=threads, max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
                                       profiles_dir=profiles_dir)
    elif device != "localhost":
        raise Unsupported(f"{device}: a text encoder-decoder (T5) is measured on this host only; add --estimate "
                          "for the profile's roofline figures (speech models run on ssh boards)")
    elif speech:
        record = bench_speech(model, audio, runs=min(runs, 20), warmup=min(warmup, 2), threads=threads)
    else:
        record = bench_seq2seq_text(model, prompt_tokens=prompt_tokens, new_tokens=new_tokens, runs=min(runs, 20),
                                    warmup=min(warmup, 2), threads=threads)
    if output:
        atomic_write_json(output, record)
        info(f"wrote {output}")
    emit(record, human_summary(record))
