"""Decode speed of Edgeward's int4 ONNX language model against onnxruntime-genai's model builder.

One Qwen2-style decoder (the one `bench_lm_decode.py` builds: hidden 512, 8 layers, 8/2 heads,
vocab 32000, ~55M parameters, seeded random weights, no download) is turned into an int4 model
two ways from the same Hugging Face folder:
  - Edgeward: `edgeward export` (optimum, KV cache) then `quantize --mode int4-weight` (MatMulNBits,
    block 32, LM head and embeddings included);
  - onnxruntime-genai 0.15.2's model builder: `-p int4 -e cpu` (its defaults: block 32,
    accuracy_level 4, i.e. int8 activations in MatMulNBits). 0.15.2 is the newest release whose
    builder imports with the transformers we pin (4.57): 0.16 and later import Qwen3.5 classes.
Each is timed in a fresh process per measurement with the same prompt (PROMPT_TOKENS random ids)
and NEW_TOKENS greedy tokens (no early stop): Edgeward through `toolkit.lm.bench.bench_lm`,
genai through its own Generator (prefill = append_tokens + the first generate_next_token), with
1 thread and all threads, taking turns over ROUNDS rounds; medians are compared.

Run: .venv/bin/python benchmarks/bench_lm_genai.py [FOLDER-OF-AN-EARLIER-RUN]
(needs `pip install onnxruntime-genai==0.15.2 --no-deps`; results: benchmarks/results/lm_genai.json/.md)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_lm_decode import build  # noqa: E402
from benchmarks.common import write_results  # noqa: E402

PROMPT_TOKENS = 64
NEW_TOKENS = 64
ROUNDS = 5
TIMED_RUNS = 3  # per measurement, after one warm-up; the median is kept
BLOCK = 32


def genai_child(request: dict) -> dict:
    """Runs in a fresh process: load the genai model with `threads`, one warm-up, one timed run."""
    import numpy as np
    import onnxruntime_genai as og

    folder = Path(request["folder"])
    config_path = folder / "genai_config.json"
    config = json.loads(config_path.read_text())
    session = config["model"]["decoder"].setdefault("session_options", {})
    session["intra_op_num_threads"] = request["threads"]
    session["inter_op_num_threads"] = 1
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):  # the random model's config names none
        if config["model"].get(key) is None:
            config["model"][key] = 1  # "<eos>" in the benchmark's tokenizer; min_length keeps it from stopping
    config_path.write_text(json.dumps(config, indent=2))
    model = og.Model(str(folder))
    ids = np.random.default_rng(0).integers(10, 30000, size=PROMPT_TOKENS).astype(np.int32)
    total = PROMPT_TOKENS + NEW_TOKENS
    timings = []
    for _ in range(1 + TIMED_RUNS):  # the first is the warm-up
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(ids)
        generator.generate_next_token()
        first = time.perf_counter()
        produced = 1
        while not generator.is_done():
            generator.generate_next_token()
            produced += 1
        end = time.perf_counter()
        timings.append(((first - start) * 1000, (produced - 1) / (end - first)))
        del generator
    ttft_ms = statistics.median(t for t, _ in timings[1:])
    rate = statistics.median(r for _, r in timings[1:])
    return {"ttft_ms": round(ttft_ms, 2), "decode_tokens_per_s": round(rate, 2), "new_tokens": produced}


def genai(folder: Path, threads: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--genai-child", json.dumps({"folder": str(folder),
                                                                                   "threads": threads})],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def edgeward(folder: Path, threads: int) -> dict:
    from toolkit.lm.bench import bench_lm

    record = bench_lm(folder, prompt_tokens=PROMPT_TOKENS, new_tokens=NEW_TOKENS, runs=TIMED_RUNS, warmup=1,
                      threads=threads)
    lm = record["language_model"]
    return {"ttft_ms": lm["ttft_ms_p50"], "decode_tokens_per_s": lm["decode_tokens_per_s"],
            "peak_rss_mb": lm.get("peak_rss_mb")}


def folder_mb(folder: Path, pattern: str) -> float:
    return round(sum(p.stat().st_size for p in folder.glob(pattern)) / 1e6, 2)


def main() -> None:
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        sys.exit("onnxruntime-genai is not installed: .venv/bin/pip install onnxruntime-genai==0.15.2 --no-deps")
    from toolkit.export import export
    from toolkit.quantize import quantize

    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="edgeward-lm-genai-"))
    if not (work / "hf").is_dir():
        build(work / "hf")
    edgeward_build_s = genai_build_s = None
    if not (work / "edgeward-int4").is_dir():
        started = time.perf_counter()
        export(str(work / "hf"), "onnx", work / "fp32")
        quantize(work / "fp32", "int4-weight", work / "edgeward-int4", block_size=BLOCK)
        edgeward_build_s = round(time.perf_counter() - started, 1)
    if not (work / "genai-int4" / "genai_config.json").is_file():
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(work / "hf"), "-o",
                        str(work / "genai-int4"), "-p", "int4", "-e", "cpu", "-c", str(work / "cache"),
                        "--extra_options", f"block_size={BLOCK}", "hf_token=false"],
                       check=True, capture_output=True, text=True)
        genai_build_s = round(time.perf_counter() - started, 1)

    rows = []
    for threads in (1, os.cpu_count()):
        measured = {"edgeward": [], "genai": []}
        for _ in range(ROUNDS):
            measured["edgeward"].append(edgeward(work / "edgeward-int4", threads))
            measured["genai"].append(genai(work / "genai-int4", threads))
        row = {"threads": threads}
        for name, runs in measured.items():
            row[name] = {"decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in runs),
                         "ttft_ms": statistics.median(r["ttft_ms"] for r in runs), "runs": runs}
        row["decode_ratio"] = round(row["edgeward"]["decode_tokens_per_s"] / row["genai"]["decode_tokens_per_s"], 3)
        row["ttft_ratio"] = round(row["edgeward"]["ttft_ms"] / row["genai"]["ttft_ms"], 3)
        rows.append(row)
    sizes = {"edgeward": folder_mb(work / "edgeward-int4", "model.onnx*"),
             "genai": folder_mb(work / "genai-int4", "model.onnx*")}
    lines = ["| threads | Edgeward decode tok/s | genai decode tok/s | ratio (target >= 1.0) | "
             "Edgeward TTFT ms | genai TTFT ms | TTFT ratio |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['threads']} | {row['edgeward']['decode_tokens_per_s']:.1f} | "
                     f"{row['genai']['decode_tokens_per_s']:.1f} | {row['decode_ratio']:.2f}x | "
                     f"{row['edgeward']['ttft_ms']:.1f} | {row['genai']['ttft_ms']:.1f} | {row['ttft_ratio']:.2f}x |")
    lines += ["", f"model size: Edgeward {sizes['edgeward']} MB, genai {sizes['genai']} MB; build time (s): Edgeward "
              f"{edgeward_build_s} (export + int4), genai builder {genai_build_s} (None: built by an earlier run)",
              f"Qwen2-style decoder (hidden 512, 8 layers, vocab 32000, random weights), {PROMPT_TOKENS}-token prompt, "
              f"{NEW_TOKENS} new tokens, int4 block {BLOCK}; medians of {ROUNDS} rounds, each measurement in a fresh "
              f"process (the median of {TIMED_RUNS} runs after one warm-up), the two taking turns. Load during the "
              "run (uptime): "
              + os.getloadavg().__repr__()]
    write_results("lm_genai", {"model": "qwen2 h512 l8 kv2 vocab32000", "block_size": BLOCK, "sizes_mb": sizes,
                               "build_s": {"edgeward": edgeward_build_s, "genai": genai_build_s}, "rows": rows},
                  lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--genai-child":
        print(json.dumps(genai_child(json.loads(sys.argv[2]))))
    else:
        main()
