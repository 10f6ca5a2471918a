"""Decode speed of Edgeward's int4 ONNX language model against onnxruntime-genai's model builder.

One Qwen2-style decoder (the one `bench_lm_decode.py` builds: hidden 512, 8 layers, 8/2 heads,
vocab 32000, ~55M parameters, seeded random weights, no download) is turned into an int4 model
two ways from the same Hugging Face folder:
  - Edgeward: `edgeward export` (onnxruntime-genai's builder in float, GroupQueryAttention and its
    KV cache) then `quantize --mode int4-weight` (MatMulNBits, block 32, LM head and embeddings included);
  - onnxruntime-genai 0.15.2's model builder: `-p int4 -e cpu` (its defaults: block 32,
    accuracy_level 4, i.e. int8 activations in MatMulNBits). 0.15.2 is the newest release whose
    builder imports with the transformers we pin (4.57): 0.16 and later import Qwen3.5 classes.
Four measurements, each in a fresh process with a PROMPT_TOKENS random-id prompt and NEW_TOKENS
greedy tokens (no early stop), 1 thread and all threads, taking turns over ROUNDS rounds:
  - edgeward: Edgeward's int4 model through Edgeward's loop (KvDecoder.forward + argmax, as
    `toolkit.lm.bench.measure` runs it);
  - genai: genai's int4 model through genai's own runtime (Generator; prefill = append_tokens + the
    first generate_next_token);
  - edgeward_model_genai_runtime: Edgeward's int4 model through genai's runtime (the folder keeps
    genai_config.json): model against model, same runtime;
  - genai_model_edgeward_loop: genai's model through Edgeward's loop: loop against runtime, same model.
Medians are compared, and for the issue's ratio also the median of the per-round ratios (a round's four
measurements run back to back); the ratios within one run of the script are what counts on a shared machine.

Run: .venv/bin/python benchmarks/bench_lm_genai.py [FOLDER-OF-AN-EARLIER-RUN]
(needs `pip install onnxruntime-genai==0.15.2 --no-deps`; results: benchmarks/results/lm_genai.json/.md)
"""

from __future__ import annotations

import json
import os
import shutil
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
ROUNDS = 25  # one measurement varies 10-20% from round to round on this shared machine, and with 11 rounds
# five runs of the script read the ratio anywhere from 0.92x to 1.12x; a median's error shrinks as 1/sqrt(rounds)
TIMED_RUNS = 5  # per measurement, after one warm-up; the median is kept
BLOCK = 32


def genai_generate(folder: Path, threads: int):
    """A greedy run in genai's runtime: prefill = append_tokens + the first generate_next_token."""
    import numpy as np
    import onnxruntime_genai as og

    scratch = Path(tempfile.mkdtemp(prefix="edgeward-genai-child-"))  # links: the folder's config stays as it is
    for path in folder.iterdir():
        if path.name != "genai_config.json":
            (scratch / path.name).symlink_to(path.resolve())
    config = json.loads((folder / "genai_config.json").read_text())
    session = config["model"]["decoder"].setdefault("session_options", {})
    session["intra_op_num_threads"] = threads
    session["inter_op_num_threads"] = 1
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):  # the random model's config names none
        if config["model"].get(key) is None:
            config["model"][key] = 1  # "<eos>" in the benchmark's tokenizer; min_length keeps it from stopping
    (scratch / "genai_config.json").write_text(json.dumps(config, indent=2))
    try:
        model = og.Model(str(scratch))  # its sessions are made: the links are no longer read
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ids = np.random.default_rng(0).integers(10, 30000, size=PROMPT_TOKENS).astype(np.int32)

    def steps(generator):
        generator.append_tokens(ids)
        generator.generate_next_token()
        yield
        while not generator.is_done():
            generator.generate_next_token()
            yield

    def run():  # the generator (and its cache) is made before the clock starts
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=PROMPT_TOKENS + NEW_TOKENS, min_length=PROMPT_TOKENS + NEW_TOKENS,
                                  do_sample=False)
        return steps(og.Generator(model, params))

    return run


def edgeward_generate(folder: Path, threads: int):
    """A greedy run through Edgeward's loop, as `edgeward bench` times it (toolkit.lm.bench.measure):
    KvDecoder.forward, then argmax of the logits it returns."""
    import numpy as np

    from toolkit.lm.decoder import KvDecoder, open_session

    config = json.loads((folder / "genai_config.json").read_text())["model"]  # both folders carry it
    decoder = KvDecoder(open_session(folder / "model.onnx", threads), context=config["context_length"],
                        head_dim=config["decoder"]["head_size"])
    ids = np.random.default_rng(0).integers(10, 30000, size=PROMPT_TOKENS).astype(np.int64)

    def steps():
        token = int(decoder.forward(ids, copy=False).argmax())
        yield
        for _ in range(NEW_TOKENS - 1):
            token = int(decoder.forward([token], copy=False).argmax())
            yield

    def run():  # the cache is sized for the prompt + new tokens, as genai's generator's
        decoder.reserve(PROMPT_TOKENS + NEW_TOKENS)
        decoder.reset()
        return steps()

    return run


def child(request: dict) -> dict:
    """Runs in a fresh process: one warm-up and TIMED_RUNS timed runs of one loop on one model; wall
    time, and this process's CPU time (less disturbed by the other engineers' work on a shared machine)."""
    make = {"edgeward": edgeward_generate, "genai": genai_generate}[request["loop"]]
    run = make(Path(request["folder"]), request["threads"])
    timings = []
    for _ in range(1 + TIMED_RUNS):  # the first is the warm-up
        steps = run()
        start = time.perf_counter()
        next(steps)
        first, first_cpu = time.perf_counter(), time.process_time()
        produced = 1 + sum(1 for _ in steps)
        end, end_cpu = time.perf_counter(), time.process_time()
        timings.append({"ttft_ms": (first - start) * 1000, "decode_tokens_per_s": (produced - 1) / (end - first),
                        "decode_cpu_ms_per_token": (end_cpu - first_cpu) * 1000 / (produced - 1),
                        "new_tokens": produced})
    timed = timings[1:]
    return {key: round(statistics.median(t[key] for t in timed), 3) for key in timed[0]}


def measure(loop: str, folder: Path, threads: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps({"loop": loop, "folder": str(folder),
                                                                             "threads": threads})],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


MEASUREMENTS = {  # name: (loop, model folder)
    "edgeward": ("edgeward", "edgeward-int4"),
    "genai": ("genai", "genai-int4"),
    "edgeward_model_genai_runtime": ("genai", "edgeward-int4"),
    "genai_model_edgeward_loop": ("edgeward", "genai-int4"),
}
RATIOS = {  # name: (numerator, denominator, what it compares)
    "decode_ratio": ("edgeward", "genai", "issue 15's figure: Edgeward model + loop vs genai model + runtime"),
    "model_ratio": ("edgeward_model_genai_runtime", "genai", "model vs model, both in genai's runtime"),
    "loop_ratio": ("edgeward", "edgeward_model_genai_runtime", "Edgeward's loop vs genai's runtime, Edgeward's model"),
}


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
    edgeward_steps = "export + int4"
    if (work / "edgeward-int4").is_dir():
        edgeward_steps = "built by an earlier run"
    else:
        started = time.perf_counter()
        if not (work / "fp32").is_dir():  # an earlier run's export is reused: quantize is what changes
            export(str(work / "hf"), "onnx", work / "fp32")
        else:
            edgeward_steps = "int4; the export reused"
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
        measured = {name: [] for name in MEASUREMENTS}
        load_before = os.getloadavg()
        names = list(MEASUREMENTS)
        for round_index in range(ROUNDS):  # each round starts with the next measurement: no fixed slot
            for name in names[round_index % len(names):] + names[:round_index % len(names)]:
                loop, model = MEASUREMENTS[name]
                measured[name].append(measure(loop, work / model, threads))
        row = {"threads": threads, "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()]}
        for name, runs in measured.items():
            row[name] = {key: statistics.median(r[key] for r in runs)
                         for key in ("decode_tokens_per_s", "decode_cpu_ms_per_token", "ttft_ms")}
            row[name]["runs"] = runs
        for ratio, (top, bottom, _) in RATIOS.items():
            row[ratio] = round(row[top]["decode_tokens_per_s"] / row[bottom]["decode_tokens_per_s"], 3)
            # the same ratio within each round (its four measurements ran back to back), then the median:
            # the machine's speed drifts between rounds (a third either way here), less within one
            row[ratio + "_paired"] = round(statistics.median(
                a["decode_tokens_per_s"] / b["decode_tokens_per_s"] for a, b in zip(measured[top], measured[bottom],
                                                                                     strict=True)), 3)
            row[ratio + "_cpu"] = round(row[bottom]["decode_cpu_ms_per_token"] / row[top]["decode_cpu_ms_per_token"], 3)
        per_round = sorted(a["decode_tokens_per_s"] / b["decode_tokens_per_s"]
                           for a, b in zip(measured["edgeward"], measured["genai"], strict=True))
        row["decode_ratio_quartiles"] = [round(statistics.quantiles(per_round, n=4)[i], 3) for i in (0, 2)]
        row["decode_rounds_ahead"] = sum(value >= 1 for value in per_round)  # rounds where Edgeward was faster
        row["ttft_ratio"] = round(row["edgeward"]["ttft_ms"] / row["genai"]["ttft_ms"], 3)
        rows.append(row)
    sizes = {"edgeward": folder_mb(work / "edgeward-int4", "model.onnx*"),
             "genai": folder_mb(work / "genai-int4", "model.onnx*")}
    lines = ["Decode tokens/s (median of the rounds; wall time), ratios by wall time and by CPU time per token "
             "(this process's CPU time: less disturbed by other work on a shared machine) and, for the issue's ratio, "
             "paired (the median of the ratios within each round, whose measurements ran back to back), time to "
             "first token:", "",
             "| threads | Edgeward model + loop | genai model + runtime | **ratio (target >= 1.0)** wall / CPU / "
             "paired (quartiles) | rounds ahead | "
             "Edgeward model, genai runtime | model ratio wall / CPU | genai model, Edgeward loop | "
             "loop ratio wall / CPU | Edgeward TTFT ms | genai TTFT ms | TTFT ratio | load (1 min) before/after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        rate = {name: row[name]["decode_tokens_per_s"] for name in MEASUREMENTS}
        both = {ratio: f"{row[ratio]:.2f}x / {row[ratio + '_cpu']:.2f}x" for ratio in RATIOS}
        low, high = row["decode_ratio_quartiles"]
        both["decode_ratio"] += f" / {row['decode_ratio_paired']:.2f}x ({low:.2f}-{high:.2f})"
        lines.append(f"| {row['threads']} | {rate['edgeward']:.1f} | {rate['genai']:.1f} | "
                     f"**{both['decode_ratio']}** | {row['decode_rounds_ahead']} of {ROUNDS} | "
                     f"{rate['edgeward_model_genai_runtime']:.1f} | "
                     f"{both['model_ratio']} | {rate['genai_model_edgeward_loop']:.1f} | {both['loop_ratio']} | "
                     f"{row['edgeward']['ttft_ms']:.1f} | {row['genai']['ttft_ms']:.1f} | "
                     f"{row['ttft_ratio']:.2f}x | {row['load_before'][0]:.2f} / {row['load_after'][0]:.2f} |")
    lines += ["", *(f"- {ratio}: {top} / {bottom}: {what}" for ratio, (top, bottom, what) in RATIOS.items()),
              "", f"model size: Edgeward {sizes['edgeward']} MB, genai {sizes['genai']} MB; build time (s): Edgeward "
              f"{edgeward_build_s} ({edgeward_steps}), genai builder {genai_build_s} (None: built by an earlier run)",
              f"Qwen2-style decoder (hidden 512, 8 layers, vocab 32000, random weights), {PROMPT_TOKENS}-token prompt, "
              f"{NEW_TOKENS} new tokens, int4 block {BLOCK}; medians of {ROUNDS} rounds, each measurement in a fresh "
              f"process (the median of {TIMED_RUNS} runs after one warm-up), the four taking turns, each round starting with the next "
              f"of them. The machine "
              f"({os.cpu_count()} cores) is shared: load averages (uptime) are in the table."]
    write_results("lm_genai", {"model": "qwen2 h512 l8 kv2 vocab32000", "block_size": BLOCK, "sizes_mb": sizes,
                               "build_s": {"edgeward": edgeward_build_s, "genai": genai_build_s},
                               "ratios": {name: what for name, (_, _, what) in RATIOS.items()}, "rows": rows},
                  lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        main()
