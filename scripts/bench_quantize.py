"""Size and latency of every quantize mode against fp32, on onnxruntime and LiteRT, in one run.

Models: the builtin digits CNN, and a BERT-like encoder built from a config (hidden 256,
4 layers, 4 heads, intermediate 1024, BERT's 30,522-token vocabulary, sequence 128,
random weights: no download). Each is exported to ONNX (optimum for BERT, torch for the
CNN) and to TFLite (litert-torch), then quantized with `toolkit.quantize.quantize` in
every mode its format offers. Latency: 1 thread, batch 1, fp32 and every mode timed in
interleaved rounds so that load from other processes falls on all of them alike.
Quality: digits test accuracy; for BERT, the largest logit difference from fp32.

Targets: int8 files <= 0.3x fp32; BERT dynamic-int8 latency <= 0.8x fp32 (onnxruntime).

Run: .venv/bin/python scripts/bench_quantize.py [--rounds N] [--quick]
Writes benchmarks/results/quantize.json and quantize.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_results  # noqa: E402

SEQUENCE = 128
BERT = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
INT8_MODES = {"dynamic-int8", "static-int8", "weight-int8"}


def export_digits(work: Path) -> dict[str, Path]:
    import litert_torch
    import torch

    from toolkit.models.digits import load_builtin

    model = load_builtin("digits-cnn").eval()
    onnx_path, tflite_path = work / "digits.onnx", work / "digits.tflite"
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(onnx_path), dynamo=True, external_data=False,
                      input_names=["x"], output_names=["logits"], verbose=False)
    litert_torch.convert(model, (torch.zeros(1, 1, 8, 8),)).export(str(tflite_path))
    return {"onnx": onnx_path, "tflite": tflite_path}


def export_bert(work: Path) -> dict[str, Path]:
    import litert_torch
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(**BERT, num_labels=2, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(work / "bert-hf")
    main_export(str(work / "bert-hf"), output=str(work / "bert-onnx"), task="text-classification")

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.ones(1, SEQUENCE, dtype=torch.int64)
    tflite_path = work / "bert.tflite"
    litert_torch.convert(Logits(model).eval(), (ids, torch.ones_like(ids))).export(str(tflite_path))
    return {"onnx": work / "bert-onnx" / "model.onnx", "tflite": tflite_path}


def bert_inputs(runner, count: int, seed: int) -> dict[str, np.ndarray]:
    """Random token ids for the runner's inputs (ONNX: named; TFLite: args_0 ids, args_1 mask)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in runner.inputs:
        dtype = np.dtype(spec.dtype)
        if spec.name in ("input_ids", "args_0"):
            feeds[spec.name] = rng.integers(1000, 30000, (count, SEQUENCE)).astype(dtype)
        elif spec.name in ("attention_mask", "args_1"):
            feeds[spec.name] = np.ones((count, SEQUENCE), dtype)
        else:
            feeds[spec.name] = np.zeros((count, SEQUENCE), dtype)
    return feeds


def calibration_for(name: str, float_path: Path, work: Path):
    if name == "digits-cnn":
        return "builtin:digits:train"
    from toolkit.runtime import open_model

    path = work / f"bert-calibration-{float_path.suffix[1:]}.npz"
    np.savez(path, **bert_inputs(open_model(float_path), 32, seed=1))
    return path


def quality(name: str, runner, reference_outputs, data) -> dict:
    from toolkit.runtime import run_batched

    if name == "digits-cnn":
        logits = run_batched(runner, {runner.inputs[0].name: data.inputs["x"]})[0]
        return {"accuracy_pct": round(float((logits.argmax(1) == data.labels).mean() * 100), 2)}
    outputs = np.concatenate([runner.run({k: v[i : i + 1] for k, v in data.items()})[0] for i in range(8)])
    return {"max_abs_diff": float(np.abs(outputs - reference_outputs).max())}


def time_round_robin(runners: dict, feeds: dict, rounds: int, per_round: int) -> dict[str, float]:
    """Median ms per variant; each round times every variant `per_round` times, in turn."""
    samples: dict[str, list[float]] = {key: [] for key in runners}
    for key, runner in runners.items():
        for _ in range(5):
            runner.run(feeds[key])
    for _ in range(rounds):
        for key, runner in runners.items():
            for _ in range(per_round):
                started = time.perf_counter()
                runner.run(feeds[key])
                samples[key].append((time.perf_counter() - started) * 1000)
    return {key: float(np.median(values)) for key, values in samples.items()}


def bench_model(name: str, floats: dict[str, Path], work: Path, rounds: int) -> list[dict]:
    from toolkit.data import load_data
    from toolkit.quantize import quantize
    from toolkit.quantize.modes import modes_for
    from toolkit.runtime import open_model

    rows = []
    for fmt, float_path in floats.items():
        variants = {"fp32": float_path}
        failures = {}
        calibration = calibration_for(name, float_path, work)
        for mode in modes_for(fmt):
            started = time.perf_counter()
            try:
                result = quantize(float_path, mode.name, work / f"{name}-{fmt}-{mode.name}",
                                  calibration=calibration if mode.needs_calibration else None,
                                  calibration_size=256 if name == "digits-cnn" else 32)
                variants[mode.name] = result.model_path
                print(f"  {name} {fmt} {mode.name}: {result.size_ratio:.3f}x size "
                      f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
            except Exception as error:  # a benchmark reports a failing mode and goes on
                failures[mode.name] = str(error).splitlines()[0][:200]
                print(f"  {name} {fmt} {mode.name}: FAILED {failures[mode.name]}", file=sys.stderr)
        runners = {key: open_model(path, threads=1) for key, path in variants.items()}
        if name == "digits-cnn":
            data = load_data("builtin:digits:test")
            feeds = {key: {r.inputs[0].name: data.inputs["x"][:1]} for key, r in runners.items()}
            reference = None
        else:
            data = bert_inputs(runners["fp32"], 8, seed=2)
            feeds = {key: {k: v[:1] for k, v in bert_inputs(r, 1, seed=3).items()} for key, r in runners.items()}
            reference = np.concatenate([runners["fp32"].run({k: v[i : i + 1] for k, v in data.items()})[0]
                                        for i in range(8)])
        latency = time_round_robin(runners, feeds, rounds, 20 if name == "digits-cnn" else 3)
        from toolkit.quantize import model_bytes

        float_size = model_bytes(float_path)
        for key, path in variants.items():
            size = model_bytes(path)
            rows.append({
                "model": name, "format": fmt, "mode": key, "size_bytes": size,
                "size_ratio": round(size / float_size, 4), "latency_ms_p50": round(latency[key], 4),
                "latency_ratio": round(latency[key] / latency["fp32"], 3),
                **quality(name, runners[key], reference, data),
            })
        rows += [{"model": name, "format": fmt, "mode": mode, "error": error} for mode, error in failures.items()]
    return rows


def targets(rows: list[dict]) -> list[dict]:
    checks = []
    for row in rows:
        if row.get("mode") in INT8_MODES and "size_ratio" in row:
            checks.append({"target": f"{row['model']} {row['format']} {row['mode']} size <= 0.3x",
                           "value": row["size_ratio"], "met": row["size_ratio"] <= 0.3})
        if row["model"] == "bert-like" and row["mode"] == "dynamic-int8" and "latency_ratio" in row:
            checks.append({"target": f"bert-like {row['format']} dynamic-int8 latency <= 0.8x",
                           "value": row["latency_ratio"], "met": row["latency_ratio"] <= 0.8})
    return checks


def table(rows: list[dict], checks: list[dict]) -> list[str]:
    lines = ["| model | format | mode | size | size ratio | p50 ms (1 thread, batch 1) | latency ratio | quality |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['format']} | {row['mode']} | failed: {row['error']} ||||||")
            continue
        quality_text = (f"accuracy {row['accuracy_pct']:.2f}%" if "accuracy_pct" in row
                        else f"max |Δlogit| {row['max_abs_diff']:.4f}")
        lines.append(f"| {row['model']} | {row['format']} | {row['mode']} | {row['size_bytes'] / 1024:,.1f} KiB | "
                     f"{row['size_ratio']:.3f} | {row['latency_ms_p50']:.3f} | {row['latency_ratio']:.2f} | "
                     f"{quality_text} |")
    lines += ["", "| target | value | met |", "|---|---:|---|"]
    lines += [f"| {c['target']} | {c['value']} | {'yes' if c['met'] else 'NO'} |" for c in checks]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    parser.add_argument("--quick", action="store_true", help="digits CNN only (no BERT)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeward-bench-quantize-") as folder:
        work = Path(folder)
        print("exporting the digits CNN ...", file=sys.stderr)
        rows = bench_model("digits-cnn", export_digits(work), work, args.rounds)
        if not args.quick:
            print("exporting the BERT-like model ...", file=sys.stderr)
            rows += bench_model("bert-like", export_bert(work), work, args.rounds)
    checks = targets(rows)
    from importlib import metadata

    settings_text = {"threads": 1, "batch": 1, "sequence": SEQUENCE, "bert_config": BERT, "rounds": args.rounds,
                     "ai-edge-quantizer": metadata.version("ai-edge-quantizer"),
                     "timing": "fp32 and every mode interleaved, rounds x runs each, median"}
    write_results("quantize", {"settings": settings_text, "rows": rows, "targets": checks}, table(rows, checks))


if __name__ == "__main__":
    main()
