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
             threads: int | None = None) -> dict:
    """Measure `model` (an exported LM folder or its model.onnx) locally; returns a JSON-ready record."""
    from toolkit.lm.folder import context_length, head_dim, read_config
    from toolkit.lm.model import model_file

    folder, onnx_path = model_file(Path(model))
    config = read_config(folder)
    if prompt_tokens < 1 or new_tokens < 1:
        raise BadInput("--prompt-tokens and --new-tokens must be at least 1")
    context = context_length(config)
    if context is not None and prompt_tokens + new_tokens > context:
        raise BadInput(f"{prompt_tokens} prompt + {new_tokens} new tokens do not fit the model's context "
                       f"of {context} tokens")
    request = {"model": str(onnx_path.absolute()), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
               "runs": runs, "warmup": warmup, "threads": threads, "context": context,
               "vocab_size": int(config.get("vocab_size") or 2), "head_dim": head_dim(config)}
    try:
        done = subprocess.run([sys.executable, "-m", "toolkit.lm.bench", json.dumps(request)],
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"the language-model bench ran past {TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"the language-model bench failed: {last}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in folder.glob("model.onnx*"))
    return {"model": {"path": str(onnx_path), "format": "onnx", "size_bytes": size, "kind": "language-model"},
            "device": {"name": "localhost", "kind": "host"}, "estimate": False, "language_model": measured}


def measure(request: dict) -> dict:
    """Runs in the child: warm-up, then `runs` × (prefill + decode), timed with perf_counter."""
    from toolkit.lm.decoder import KvDecoder, open_session

    decoder = KvDecoder(open_session(Path(request["model"]), request["threads"]), context=request["context"],
                        head_dim=request.get("head_dim"))
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, request["vocab_size"], size=request["prompt_tokens"], dtype=np.int64)
    ttft, decode = [], []
    for run in range(request["warmup"] + request["runs"]):
        decoder.reset()
        start = time.perf_counter()
        token = int(np.argmax(decoder.forward(prompt)))
        first = time.perf_counter()
        for _ in range(request["new_tokens"] - 1):
            token = int(np.argmax(decoder.forward([token])))
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
            "kv_cache_bytes": int(kv_bytes), "peak_rss_mb": peak_rss_mb()}


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
    return "\n".join([
        f"model   {model['path']} (language model, {human_bytes(model['size_bytes'])})",
        f"device  {record['device']['name']} (measured, {lm['runs']} runs after {lm['warmup']} warm-up)",
        f"time to first token  {lm['ttft_ms_p50']:.2f} ms p50 for a {lm['prompt_tokens']}-token prompt",
        f"decode               {lm['decode_tokens_per_s']} tokens/s ({lm['decode_ms_per_token']} ms/token, "
        f"{lm['new_tokens']} new tokens)",
        f"peak memory          {lm['peak_rss_mb']} MiB resident (KV cache {human_bytes(lm['kv_cache_bytes'])})",
    ])


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
