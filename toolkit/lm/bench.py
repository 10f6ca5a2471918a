"""Bench a language model on this host: time to first token, decode tokens per second, peak memory.

The timing runs in a fresh Python process (as the device runner does), so its peak resident
memory is the decoder's own: Python, onnxruntime, the weights and the KV cache, not the caller's
torch or transformers. The prompt is `prompt_tokens` seeded random token ids (no end-of-sequence
stop), so every run decodes exactly `new_tokens` tokens.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from toolkit.errors import BadInput, DeviceError

logger = logging.getLogger(__name__)

TIMEOUT_S = 1800


def bench_lm(model, *, prompt_tokens: int = 32, new_tokens: int = 32, runs: int = 3, warmup: int = 1,
             threads: int | None = None, device: str = "localhost", estimate: bool = False,
             profiles_dir=None) -> dict:
    """Measure `model` (an exported LM folder, its model.onnx or model.tflite) on this host or a device, or with
    `estimate` estimate it from the device's profile; returns a JSON-ready record."""
    from toolkit.lm.folder import context_length, head_dim, read_config
    from toolkit.lm.model import model_file

    folder, onnx_path = model_file(Path(model))
    config = read_config(folder)
    if prompt_tokens < 1 or new_tokens < 1:
        raise BadInput("--prompt-tokens and --new-tokens must be at least 1")
    context = context_length(config)
    if onnx_path.suffix.lower() == ".tflite":  # LiteRT's KV cache holds fewer positions than the model's context
        from toolkit.lm.litert_decoder import cache_length

        context = cache_length(onnx_path)
    if context is not None and prompt_tokens + new_tokens > context:
        raise BadInput(f"{prompt_tokens} prompt + {new_tokens} new tokens do not fit the model's context "
                       f"of {context} tokens")
    litert = onnx_path.suffix.lower() == ".tflite"
    files = [onnx_path] if litert else model_files(folder, onnx_path)  # a .tflite holds its weights
    record = {"model": {"path": str(onnx_path), "format": "tflite" if litert else "onnx",
                        "size_bytes": sum(p.stat().st_size for p in files), "kind": "language-model"}}
    if estimate:
        from toolkit.bench import device_record
        from toolkit.devices import get_profile
        from toolkit.lm.estimate import estimate_lm

        profile = get_profile(device, profiles_dir)
        figures = estimate_lm(onnx_path, head_dim(config), profile, prompt_tokens=prompt_tokens,
                              new_tokens=new_tokens)
        return {**record, "device": device_record(profile), "estimate": True, "mode": "estimate",
                "language_model": figures}
    request = {"model": str(onnx_path.absolute()), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
               "runs": runs, "warmup": warmup, "threads": threads, "context": context,
               "vocab_size": int(config.get("vocab_size") or 2), "head_dim": head_dim(config)}
    if device == "localhost":
        return {**record, "device": {"name": "localhost", "kind": "host"}, "estimate": False,
                "language_model": measure_here(request)}
    return {**record, **bench_lm_on_board(files, device, request, profiles_dir)}


def model_files(folder: Path, onnx_path: Path) -> list[Path]:
    """model.onnx first, then the external data files its initializers name (pushed beside it)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    locations = sorted({ExternalDataInfo(tensor).location for tensor in graph.initializer
                        if uses_external_data(tensor)})
    for location in locations:
        if Path(location).name != location or not (folder / location).is_file():
            raise BadInput(f"{onnx_path}: its external data {location!r} is not a file beside it")
    return [onnx_path, *(folder / location for location in locations)]


def measure_here(request: dict) -> dict:
    """`measure` in a fresh Python process on this host."""
    try:
        done = subprocess.run([sys.executable, "-m", "toolkit.lm.bench", json.dumps(request)],
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"the language-model bench ran past {TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"the language-model bench failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


MEASURE_FIELDS = ("prompt_tokens", "new_tokens", "runs", "warmup", "threads", "ttft_ms_p50", "ttft_ms_min",
                  "decode_tokens_per_s", "decode_ms_per_token", "kv_cache_bytes", "peak_rss_mb", "tokens")


def bench_lm_on_board(files: list[Path], device: str, request: dict, profiles_dir) -> dict:
    """The same measurement by the device runner's `lm` command on an ssh (or emulated ARM64) board."""
    from toolkit.bench import EMULATION_NOTE, device_record
    from toolkit.devices import bench_lm_on_device, get_profile

    profile = get_profile(device, profiles_dir)
    result = bench_lm_on_device(files, device, request=request, profiles_dir=profiles_dir, timeout=TIMEOUT_S)
    measured = {key: result.get(key) for key in MEASURE_FIELDS}
    board = {key: result.get(key) for key in ("runtime", "delegate", "load_ms", "rss_before_load_mb",
                                              "peak_over_baseline_mb", "peak_rss_source", "python", "machine",
                                              "transport")}
    record = {"device": device_record(profile), "estimate": False, "mode": "measured", "language_model": measured,
              "board": board}
    if profile.emulated:
        record.update(emulated=True, timing="emulated", timing_note=EMULATION_NOTE)
    return record


def measure(request: dict) -> dict:
    """Runs in the child: warm-up, then `runs` × (prefill + decode), timed with perf_counter."""
    from toolkit.lm.decoder import KvDecoder, open_session

    if request["model"].endswith(".tflite"):
        from toolkit.lm.litert_decoder import LiteRtDecoder, open_interpreter

        decoder = LiteRtDecoder(open_interpreter(Path(request["model"]), request["threads"]))
    else:
        decoder = KvDecoder(open_session(Path(request["model"]), request["threads"]), context=request["context"],
                            head_dim=request.get("head_dim"))
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, request["vocab_size"], size=request["prompt_tokens"], dtype=np.int64)
    ttft, decode, tokens = [], [], []
    decoder.reserve(request["prompt_tokens"] + request["new_tokens"])
    for run in range(request["warmup"] + request["runs"]):
        decoder.reset()
        start = time.perf_counter()
        token = int(decoder.forward(prompt, copy=False).argmax())
        first = time.perf_counter()
        tokens = [token]
        for _ in range(request["new_tokens"] - 1):
            token = int(decoder.forward([token], copy=False).argmax())  # the method: see KvDecoder.forward
            tokens.append(token)
        end = time.perf_counter()
        if run >= request["warmup"]:
            ttft.append((first - start) * 1000)
            decode.append((request["new_tokens"] - 1) / (end - first) if request["new_tokens"] > 1 else None)
    kv_bytes = sum(value.nbytes for value in decoder.past.values())
    rates = [rate for rate in decode if rate is not None]
    return {"prompt_tokens": request["prompt_tokens"], "new_tokens": request["new_tokens"], "runs": request["runs"],
            "warmup": request["warmup"], "threads": request["threads"],
            "ttft_ms_p50": round(float(np.median(ttft)), 3), "ttft_ms_min": round(min(ttft), 3),
            "decode_tokens_per_s": round(float(np.median(rates)), 2) if rates else None,
            "decode_ms_per_token": round(1000 / float(np.median(rates)), 3) if rates else None,
            "kv_cache_bytes": int(kv_bytes), "peak_rss_mb": peak_rss_mb(), "tokens": tokens}


def peak_rss_mb() -> float | None:
    """This process's peak resident memory. On Linux VmHWM, which starts afresh at exec (ru_maxrss
    keeps the parent's peak across fork + exec, so a child started from a big process would report it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def human_summary(record: dict) -> str:
    from toolkit.common.units import human_bytes

    lm = record["language_model"]
    model = record["model"]
    head = f"model   {model['path']} (language model, {human_bytes(model['size_bytes'])})"
    if record.get("estimate"):
        return "\n".join([
            head, f"device  {record['device']['name']} ESTIMATE ({lm['why']})",
            f"time to first token  {lm['ttft_ms']:.2f} ms estimated for a {lm['prompt_tokens']}-token prompt "
            f"({lm['prefill_bound']}-bound: {lm['prefill_flops']:,} FLOPs at {lm['peak_gops']:g} GOPS "
            f"{lm['peak_precision']})",
            f"decode               {lm['decode_tokens_per_s']} tokens/s estimated ({lm['decode_ms_per_token']} "
            f"ms/token: {human_bytes(lm['decode_bytes_per_token'])} read per token at "
            f"{lm['memory_bandwidth_gbps']:g} GB/s)",
            f"memory               weights {human_bytes(lm['weight_bytes'])} + KV cache "
            f"{human_bytes(lm['kv_cache_bytes'])} " + (
                f"(LiteRT's fixed cache of {lm['cache_positions']} positions)" if lm.get("cache_positions")
                else f"for {lm['prompt_tokens'] + lm['new_tokens']} tokens"),
        ])
    emulated = record.get("timing") == "emulated"
    how = "EMULATED: timings are QEMU's, not the device's" if emulated else "measured"
    lines = [head, f"device  {record['device']['name']} ({how}, {lm['runs']} runs after {lm['warmup']} warm-up)"]
    label = "emulated " if emulated else ""
    lines += [
        f"{label}time to first token  {lm['ttft_ms_p50']:.2f} ms p50 for a {lm['prompt_tokens']}-token prompt",
        f"{label}decode               {lm['decode_tokens_per_s']} tokens/s ({lm['decode_ms_per_token']} ms/token, "
        f"{lm['new_tokens']} new tokens)",
        f"peak memory          {lm['peak_rss_mb']} MiB resident (KV cache {human_bytes(lm['kv_cache_bytes'])})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
