"""Edgeward's accuracy-gated `quantize --mode auto` against Hugging Face Optimum.

The same BERT-like model (built from a config: hidden 256, 4 layers, sequence 128) is
exported once to ONNX, then quantized two ways:
  - Optimum: ORTQuantizer + AutoQuantizationConfig.avx512_vnni(is_static=False), which is
    what `optimum-cli onnxruntime quantize --avx512_vnni` does;
  - Edgeward: `edgeward quantize MODEL --mode auto --data DATA --max-drop 1.0 --objective latency`
    (the default objective, size, would keep the smallest passing model: int4-weight here).
All three are timed in this process (onnxruntime, 1 thread, batch 1), taking turns over
ROUNDS rounds so that load from other jobs on a shared machine hits them alike, and
compared on size and on argmax agreement with the float model over held-out inputs.

Run: .venv/bin/python benchmarks/bench_vs_optimum.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, write_results  # noqa: E402

SEQUENCE = 128
SAMPLES = 200
ROUNDS, RUNS_PER_ROUND = 10, 30


def build_model(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                        vocab_size=30522, max_position_embeddings=512, num_labels=4)
    model = BertForSequenceClassification(config).eval()
    hf = folder / "hf"
    model.save_pretrained(hf, safe_serialization=True)
    from optimum.exporters.onnx import main_export

    onnx_dir = folder / "onnx"
    main_export(str(hf), output=str(onnx_dir), task="text-classification", opset=18, do_validation=False)
    return onnx_dir


def make_inputs(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(count, SEQUENCE), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(sess, inputs: dict[str, np.ndarray]) -> np.ndarray:
    names = {i.name for i in sess.get_inputs()}
    outs = []
    for start in range(len(inputs["input_ids"])):
        feeds = {k: v[start : start + 1] for k, v in inputs.items() if k in names}
        outs.append(sess.run(None, feeds)[0])
    return np.concatenate(outs)


def interleaved_p50(sessions: dict, feeds: dict) -> dict[str, dict]:
    """p50 of each model over ROUNDS rounds of RUNS_PER_ROUND runs, the models taking turns.

    The machine is shared: load that comes and goes then hits every model alike instead of
    whichever happened to be timed during it. Each round's median is kept too, so the
    ratio can be checked round by round.
    """
    import statistics
    import time

    for label, sess in sessions.items():
        for _ in range(10):
            sess.run(None, feeds[label])
    samples = {label: [] for label in sessions}
    rounds = {label: [] for label in sessions}
    for _ in range(ROUNDS):
        for label, sess in sessions.items():
            batch = []
            for _ in range(RUNS_PER_ROUND):
                started = time.perf_counter()
                sess.run(None, feeds[label])
                batch.append((time.perf_counter() - started) * 1000)
            samples[label] += batch
            rounds[label].append(round(statistics.median(batch), 4))
    return {label: {"p50_ms": statistics.median(values), "runs": len(values), "round_p50_ms": rounds[label]}
            for label, values in samples.items()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        onnx_dir = build_model(folder)
        float_model = onnx_dir / "model.onnx"

        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        quantizer = ORTQuantizer.from_pretrained(onnx_dir, file_name="model.onnx")
        quantizer.quantize(save_dir=folder / "optimum",
                           quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False))
        optimum_model = next((folder / "optimum").glob("*.onnx"))

        calibration = make_inputs(64, seed=1)
        np.savez(folder / "data.npz", **calibration)
        subprocess.run(edgeward("quantize", float_model, "--mode", "auto", "--data", folder / "data.npz",
                                "--max-drop", "1.0", "--objective", "latency", "--budget", "600", "-o", folder / "edgeward"),
                       check=True, stdout=subprocess.DEVNULL)
        edgeward_model = next(p for p in (folder / "edgeward").glob("model.*") if p.suffix == ".onnx")

        held_out = make_inputs(SAMPLES, seed=2)
        one = {k: v[:1] for k, v in held_out.items()}
        models = {"float": float_model, "optimum": optimum_model, "edgeward": edgeward_model}
        sessions = {label: session(path) for label, path in models.items()}
        feeds = {label: {k: v for k, v in one.items() if k in {i.name for i in sess.get_inputs()}}
                 for label, sess in sessions.items()}
        timings = interleaved_p50(sessions, feeds)
        results = {}
        reference = None
        for label, path in models.items():
            out = logits(sessions[label], held_out)
            if reference is None:
                reference = out
            results[label] = {
                "path": path.name,
                "size_bytes": sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name)),
                **timings[label],
                "agreement": float((out.argmax(1) == reference.argmax(1)).mean()),
            }
    e, o = results["edgeward"], results["optimum"]
    rounds_faster = sum(a <= b for a, b in zip(e["round_p50_ms"], o["round_p50_ms"], strict=True))
    ratios = {"latency_edgeward_over_optimum": e["p50_ms"] / o["p50_ms"],
              "rounds_edgeward_faster": f"{rounds_faster}/{ROUNDS}",
              "size_edgeward_over_optimum": e["size_bytes"] / o["size_bytes"],
              "agreement_edgeward_minus_optimum": e["agreement"] - o["agreement"]}
    lines = ["| model | size (MB) | p50 (ms, 1 thread) | agreement with float |", "|---|---|---|---|"]
    for label, r in results.items():
        lines.append(f"| {label} | {r['size_bytes'] / 1e6:.2f} | {r['p50_ms']:.2f} | {r['agreement']:.3f} |")
    lines += ["", f"latency ratio edgeward/optimum: {ratios['latency_edgeward_over_optimum']:.3f} (target <= 1.0); "
              f"edgeward faster in {ratios['rounds_edgeward_faster']} interleaved rounds",
              f"size ratio edgeward/optimum: {ratios['size_edgeward_over_optimum']:.3f} (target <= 1.0)",
              f"agreement difference edgeward-optimum: {ratios['agreement_edgeward_minus_optimum']:+.3f} (target >= 0)"]
    write_results("vs_optimum", {"models": results, "ratios": ratios, "sequence": SEQUENCE, "samples": SAMPLES}, lines)


if __name__ == "__main__":
    main()
