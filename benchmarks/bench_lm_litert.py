"""Decode speed of a LiteRT int4 language model against the ONNX int4 one, same network, same machine.

The Qwen2-style decoder of `bench_lm_decode.py` (hidden 512, 8 layers, 8/2 heads, vocab 32000,
~55M parameters, seeded random weights, no download) is exported twice from the same Hugging Face
folder and quantized to int4 blocks of 32 both ways:
  - ONNX: `edgeward export --to onnx` then `quantize --mode int4-weight --block-size 32` (MatMulNBits);
  - LiteRT: `edgeward export --to tflite` (litert-torch, prefill_16/prefill_64/decode signatures, an
    external KV cache) then `quantize --mode int4-weight --block-size 32` (ai-edge-quantizer's
    dynamic_wi4_afp32 block-wise: int4 weights, int8 activations, XNNPACK), at three cache lengths:
    PROMPT_TOKENS + NEW_TOKENS (what the run needs, `--cache-length 128`), 256, and 1,024 (the export's
    default for a long-context model).
Each measurement is `toolkit.lm.bench.bench_lm` (a fresh process: one warm-up, TIMED_RUNS timed runs
of a PROMPT_TOKENS random-id prompt and NEW_TOKENS greedy tokens), 1 thread and 2, the formats taking
turns over ROUNDS rounds; medians are compared. The signatures keep no state: every decode step reads
and writes the whole fixed-size cache inside the graph, which the ONNX loop, whose cache grows with the
tokens, does not. A per-step profile (1 thread, CPU time, in this process) splits a decode step into the
interpreter's invoke and the Python side, for the decoder's in-place feeding, against ai-edge-litert's
SignatureRunner (fresh arrays in and out each call, what the decoder did before).

Run: .venv/bin/python benchmarks/bench_lm_litert.py [FOLDER-OF-AN-EARLIER-RUN]
(results: benchmarks/results/lm_litert.json/.md)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_lm_decode import build  # noqa: E402
from benchmarks.common import write_results  # noqa: E402

PROMPT_TOKENS = 64
NEW_TOKENS = 64
CACHES = (PROMPT_TOKENS + NEW_TOKENS, 256, 1024)  # LiteRT KV cache positions
PREFILL = (16, 64)
PROFILE_STEPS = 64
ROUNDS = 3
TIMED_RUNS = 3
BLOCK = 32
VARIANTS = {"onnx_int4": "onnx-int4", **{f"litert_int4_c{n}": f"litert-int4-c{n}" for n in CACHES}}


def prepare(work: Path) -> dict:
    """Build what an earlier run has not; returns seconds spent per step (None: reused)."""
    from toolkit.export import export
    from toolkit.lm.litert_export import export_lm_tflite
    from toolkit.quantize import quantize

    spent = {}
    if not (work / "hf").is_dir():
        build(work / "hf")
    steps = {
        "onnx_export": (work / "onnx-fp32", partial(export, str(work / "hf"), "onnx")),
        "onnx_int4": (work / "onnx-int4", partial(quantize, work / "onnx-fp32", "int4-weight", block_size=BLOCK)),
    }
    for n in CACHES:
        steps[f"litert_export_c{n}"] = (work / f"litert-fp32-c{n}", partial(export_lm_tflite, work / "hf",
                                                                            cache_length=n, prefill_lengths=PREFILL))
        steps[f"litert_int4_c{n}"] = (work / f"litert-int4-c{n}", partial(quantize, work / f"litert-fp32-c{n}",
                                                                         "int4-weight", block_size=BLOCK))
    for name, (out, run) in steps.items():
        spent[name] = None
        if not (out / "manifest.json").is_file():
            started = time.perf_counter()
            run(out_dir=out)
            spent[name] = round(time.perf_counter() - started, 1)
    return spent


def measure(folder: Path, threads: int) -> dict:
    from toolkit.lm.bench import bench_lm

    record = bench_lm(folder, prompt_tokens=PROMPT_TOKENS, new_tokens=NEW_TOKENS, runs=TIMED_RUNS, warmup=1,
                      threads=threads)
    lm = record["language_model"]
    return {"ttft_ms": lm["ttft_ms_p50"], "decode_tokens_per_s": lm["decode_tokens_per_s"],
            "peak_rss_mb": lm["peak_rss_mb"], "kv_cache_bytes": lm["kv_cache_bytes"]}


def model_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.glob("model.*")) / 1e6, 2)


def profile_steps(folder: Path) -> dict:
    """CPU ms per decode step (1 thread, which runs on the calling thread, so time.thread_time leaves out
    what other processes take): the decoder's step and the invoke in it, against ai-edge-litert's
    SignatureRunner (copies of the cache in and out) on the same steps; the two take turns in blocks of
    PROFILE_STEPS // 4 steps after a PROMPT_TOKENS prompt, medians of the blocks."""
    import numpy as np

    from toolkit.lm.litert_decoder import LiteRtDecoder, open_interpreter

    decoder = LiteRtDecoder(open_interpreter(folder / "model.tflite", 1))
    signature = decoder.signatures.decode_signature  # the Interpreter path, whose invoke can be timed
    invoke, spent = signature.invoke, []

    def timed_invoke():
        started = time.thread_time()
        invoke()
        spent.append(time.thread_time() - started)

    signature.invoke = timed_invoke
    runner = open_interpreter(folder / "model.tflite", 1).get_signature_runner("decode")
    prompt = np.random.default_rng(0).integers(0, 32000, size=PROMPT_TOKENS)
    block = PROFILE_STEPS // 4
    steps, invokes, runs = [], [], []
    for _ in range(6):
        decoder.reset()
        token = int(np.argmax(decoder.forward(prompt)))
        cache = decoder.past
        spent.clear()
        started = time.thread_time()
        for _ in range(block):
            token = int(np.argmax(decoder.forward([token])))
        steps.append((time.thread_time() - started) / block)
        invokes.append(sum(spent) / block)
        started = time.thread_time()
        for step in range(block):
            outputs = runner(tokens=np.array([[token]], np.int32),
                             input_pos=np.array([PROMPT_TOKENS + step], np.int32), **cache)
            cache = {name: outputs[name] for name in cache}
            token = int(np.argmax(outputs["logits"][0, -1]))
        runs.append((time.thread_time() - started) / block)
    step_ms, invoke_ms = statistics.median(steps) * 1000, statistics.median(invokes) * 1000
    return {"decoder_step_ms": round(step_ms, 3), "invoke_ms": round(invoke_ms, 3),
            "decoder_python_ms": round(step_ms - invoke_ms, 3),
            "signature_runner_step_ms": round(statistics.median(runs) * 1000, 3),
            "kv_cache_mib": round(sum(a.nbytes for a in decoder.past.values()) / 2**20, 2)}


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="edgeward-lm-litert-"))
    build_s = prepare(work)
    profile_load = os.getloadavg()
    profiles = {n: profile_steps(work / f"litert-int4-c{n}") for n in CACHES}
    rows = []
    for threads in (1, 2):
        measured = {name: [] for name in VARIANTS}
        load_before = os.getloadavg()
        for _ in range(ROUNDS):
            for name, folder in VARIANTS.items():
                measured[name].append(measure(work / folder, threads))
        row = {"threads": threads, "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()]}
        for name, runs in measured.items():
            row[name] = {key: statistics.median(r[key] for r in runs)
                         for key in ("decode_tokens_per_s", "ttft_ms", "peak_rss_mb")}
            row[name]["runs"] = runs
        onnx = row["onnx_int4"]
        for n in CACHES:
            litert = row[f"litert_int4_c{n}"]
            litert["decode_ratio"] = round(litert["decode_tokens_per_s"] / onnx["decode_tokens_per_s"], 3)
            litert["ttft_ratio"] = round(litert["ttft_ms"] / onnx["ttft_ms"], 3)
        rows.append(row)
    sizes = {name: model_mb(work / folder) for name, folder in VARIANTS.items()}
    sizes["onnx_fp32"] = model_mb(work / "onnx-fp32")
    lines = ["Decode tokens/s, time to first token and peak RSS (medians of the rounds); LiteRT / ONNX in bold:", "",
             "| threads | model | KV cache positions | decode tok/s | **LiteRT / ONNX decode** | TTFT ms | TTFT ratio | "
             "peak RSS MiB | load (1 min) before/after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        load = f"{row['load_before'][0]:.2f} / {row['load_after'][0]:.2f}"
        onnx = row["onnx_int4"]
        lines.append(f"| {row['threads']} | ONNX int4 | grows | {onnx['decode_tokens_per_s']:.1f} | | "
                     f"{onnx['ttft_ms']:.1f} | | {onnx['peak_rss_mb']} | {load} |")
        for n in CACHES:
            litert = row[f"litert_int4_c{n}"]
            lines.append(f"| {row['threads']} | LiteRT int4 | {n} | {litert['decode_tokens_per_s']:.1f} | "
                         f"**{litert['decode_ratio']:.2f}x** | {litert['ttft_ms']:.1f} | {litert['ttft_ratio']:.2f}x | "
                         f"{litert['peak_rss_mb']} | {load} |")
    lines += ["", f"CPU time per decode step, 1 thread, medians of 6 blocks of {PROFILE_STEPS // 4} steps after a "
              f"{PROMPT_TOKENS}-token prompt, the decoder and SignatureRunner taking turns in one process (load before: "
              f"{profile_load[0]:.2f}):", "",
              "| KV cache positions | cache MiB | decoder step ms | of which invoke ms | of which Python ms | "
              "SignatureRunner step ms (copies in and out) |", "|---|---|---|---|---|---|"]
    for n, figures in profiles.items():
        lines.append(f"| {n} | {figures['kv_cache_mib']} | {figures['decoder_step_ms']} | {figures['invoke_ms']} | "
                     f"{figures['decoder_python_ms']} | {figures['signature_runner_step_ms']} |")
    lines += ["", f"model size MB: {sizes}; build time s (None: built by an earlier run): {build_s}",
              f"Qwen2-style decoder (hidden 512, 8 layers, vocab 32000, random weights), {PROMPT_TOKENS}-token prompt, "
              f"{NEW_TOKENS} new tokens, int4 block {BLOCK} (ONNX MatMulNBits; LiteRT dynamic_wi4_afp32 block-wise, "
              f"embedding int4 per row), LiteRT prefill windows {PREFILL}; medians of {ROUNDS} rounds, each "
              f"measurement a fresh process (median of {TIMED_RUNS} runs after one warm-up), the formats taking "
              f"turns. The machine ({os.cpu_count()} cores) is shared with other work: load averages are in the "
              "tables."]
    write_results("lm_litert", {"model": "qwen2 h512 l8 kv2 vocab32000", "block_size": BLOCK, "caches": list(CACHES),
                                "prefill": list(PREFILL), "sizes_mb": sizes, "build_s": build_s,
                                "profile_ms": profiles, "profile_load": [round(x, 2) for x in profile_load],
                                "rows": rows}, lines)


if __name__ == "__main__":
    main()
