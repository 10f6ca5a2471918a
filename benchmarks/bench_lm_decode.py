"""Decode tokens per second of a small language model: fp32 ONNX against int4 (MatMulNBits) ONNX.

A Qwen2-style decoder (hidden 512, 8 layers, 8 heads / 2 KV heads, vocab 32000, ~55M parameters)
is built from a config with seeded random weights (no download), exported with a KV cache
through `edgeward export`, quantized with `int4-weight` (block 32 and 128), and benched with
`toolkit.lm.bench.bench_lm` (fresh process per model: time to first token for a 64-token
prompt, decode tokens/s over 64 new tokens, peak RSS), with 1 thread and all threads.

Run: .venv/bin/python benchmarks/bench_lm_decode.py [FOLDER-OF-AN-EARLIER-RUN]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_results  # noqa: E402

PROMPT_TOKENS = 64
NEW_TOKENS = 64
RUNS = 3


def build(folder: Path) -> None:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=32000, hidden_size=512, intermediate_size=1408,
                                      num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                                      max_position_embeddings=1024)
    transformers.Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(["a small language model on a board"],
                                  trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>",
                                         eos_token="<eos>").save_pretrained(folder)


def main() -> None:
    import os

    from toolkit.export import export
    from toolkit.lm.bench import bench_lm
    from toolkit.quantize import quantize

    reuse = Path(sys.argv[1]) if len(sys.argv) > 1 else None  # a folder of an earlier run: bench only
    work = reuse or Path(tempfile.mkdtemp(prefix="edgeward-lm-bench-"))
    variants = {"fp32": work / "fp32", **{f"int4-b{block}": work / f"int4-b{block}" for block in (32, 128)}}
    if reuse is None:
        build(work / "hf")
        export(str(work / "hf"), "onnx", variants["fp32"])
        for block in (32, 128):
            quantize(variants["fp32"], "int4-weight", variants[f"int4-b{block}"], block_size=block)
    rows = []
    for threads in (1, os.cpu_count()):
        for name, folder in variants.items():
            record = bench_lm(folder, prompt_tokens=PROMPT_TOKENS, new_tokens=NEW_TOKENS, runs=RUNS, threads=threads)
            rows.append({"variant": name, "threads": threads, "size_bytes": record["model"]["size_bytes"],
                         **record["language_model"]})
    lines = ["| variant | threads | size MB | TTFT ms (64-token prompt) | decode tokens/s | vs fp32 | peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        base = next(r for r in rows if r["variant"] == "fp32" and r["threads"] == row["threads"])
        lines.append(f"| {row['variant']} | {row['threads']} | {row['size_bytes'] / 1e6:.1f} | {row['ttft_ms_p50']:.1f} "
                     f"| {row['decode_tokens_per_s']:.1f} | {row['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x "
                     f"| {row['peak_rss_mb']} |")
    lines += ["", "Qwen2-style decoder, hidden 512, 8 layers, 8/2 heads, vocab 32000, random weights; "
              f"median of {RUNS} runs after 1 warm-up, each in a fresh process. The machine is shared "
              "(other jobs were running), so absolute figures are noisy; the ratios are the point."]
    write_results("lm_decode", {"model": "qwen2 h512 l8 kv2 vocab32000", "prompt_tokens": PROMPT_TOKENS,
                                "new_tokens": NEW_TOKENS, "rows": rows}, lines)


if __name__ == "__main__":
    main()
