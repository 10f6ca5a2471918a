"""`quantize --mode auto --objective latency` across both formats against Hugging Face Optimum.

Two models built from a config (no download), 1 thread, batch 1:
  - BERT-like: hidden 256, 4 layers, 4 heads, sequence 128, 4 labels;
  - image: a small ResNet (ResNetConfig, 4 stages, 128x128 input, 10 labels), convolutions
    re-initialised kaiming-normal (fan-in) and batch-norm statistics taken from real activations
    so that the logits have a realistic scale (checked and recorded: `float_logit_std`).
Each is saved as a Hugging Face folder. Optimum: the folder exported with `main_export`, then
`ORTQuantizer` + `AutoQuantizationConfig.avx512_vnni(is_static=False)`. Edgeward:
`edgeward quantize FOLDER --mode auto --objective latency --data DATA` (both formats: the folder
is exported to ONNX and TFLite and every mode of each is tried). The float ONNX model, Optimum's
and Edgeward's chosen model are then timed in this process through the same runners
(`toolkit.runtime.open_model`, 1 thread), taking turns over ROUNDS rounds, and compared on size
and on argmax agreement with the float model over SAMPLES held-out inputs.

Run: .venv/bin/python benchmarks/bench_auto_formats.py [bert|image ...]   (results: auto_formats_<name>.json/.md)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, write_results  # noqa: E402

SEQUENCE, IMAGE = 128, 128
SAMPLES, EVAL = 200, 64
ROUNDS, RUNS_PER_ROUND = 10, 20
TARGETS = {"latency": 0.7, "size": 1.0}


def build_bert(folder: Path) -> tuple[Path, str]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                        vocab_size=30522, max_position_embeddings=512, num_labels=4)
    BertForSequenceClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder, "text-classification"


def bert_inputs(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(count, SEQUENCE), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def build_image(folder: Path) -> tuple[Path, str]:
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1],
                          layer_type="basic", num_labels=10)
    config.image_size = IMAGE  # saved in config.json: the input shape Edgeward's export reads
    model = ResNetForImageClassification(config)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, 0.0, 1.0 / module.in_features ** 0.5)
            torch.nn.init.zeros_(module.bias)
    model.train()  # batch-norm running statistics from real activations, as training would leave them
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        for seed in range(8):
            model(pixel_values=torch.from_numpy(image_inputs(32, 100 + seed)["pixel_values"]))
    model.eval().save_pretrained(folder, safe_serialization=True)
    return folder, "image-classification"


def image_inputs(count: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth random images (blobs, not white noise), normalised as ImageNet preprocessing would."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, size=(count, 3, IMAGE // 16, IMAGE // 16)).astype(np.float32)
    images = coarse.repeat(16, axis=2).repeat(16, axis=3)
    images += rng.normal(0, 0.05, size=images.shape).astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
    return {"pixel_values": ((images - mean) / std).astype(np.float32)}


MODELS = {"bert": (build_bert, bert_inputs), "image": (build_image, image_inputs)}


def optimum_model(hf: Path, task: str, folder: Path) -> tuple[Path, Path]:
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    onnx_dir = folder / "optimum-float"
    main_export(str(hf), output=str(onnx_dir), task=task, opset=18, do_validation=False)
    quantizer = ORTQuantizer.from_pretrained(onnx_dir, file_name="model.onnx")
    quantizer.quantize(save_dir=folder / "optimum",
                       quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False))
    return onnx_dir / "model.onnx", next((folder / "optimum").glob("*.onnx"))


def outputs(runner, inputs: dict[str, np.ndarray]) -> np.ndarray:
    names = {spec.name for spec in runner.inputs}
    count = len(next(iter(inputs.values())))
    return np.concatenate([np.asarray(runner.run({k: v[i:i + 1] for k, v in inputs.items() if k in names})[0],
                                      dtype=np.float32).reshape(1, -1) for i in range(count)])


def interleaved_p50(runners: dict, one: dict) -> dict[str, dict]:
    """p50 of each model over ROUNDS rounds of RUNS_PER_ROUND runs, the models taking turns (shared machine)."""
    feeds = {label: {k: v for k, v in one.items() if k in {s.name for s in r.inputs}} for label, r in runners.items()}
    for label, runner in runners.items():
        for _ in range(10):
            runner.run(feeds[label])
    samples = {label: [] for label in runners}
    rounds = {label: [] for label in runners}
    for _ in range(ROUNDS):
        for label, runner in runners.items():
            batch = []
            for _ in range(RUNS_PER_ROUND):
                started = time.perf_counter()
                runner.run(feeds[label])
                batch.append((time.perf_counter() - started) * 1000)
            samples[label] += batch
            rounds[label].append(round(statistics.median(batch), 4))
    return {label: {"p50_ms": round(statistics.median(values), 4), "round_p50_ms": rounds[label]}
            for label, values in samples.items()}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def run_one(name: str, folder: Path) -> dict:
    from toolkit.runtime import open_model

    build, make_inputs = MODELS[name]
    hf, task = build(folder / "hf")
    float_model, optimum = optimum_model(hf, task, folder)
    np.savez(folder / "data.npz", **make_inputs(EVAL, seed=1))
    started = time.perf_counter()
    subprocess.run(edgeward("quantize", hf, "--mode", "auto", "--data", folder / "data.npz", "--max-drop", "1.0",
                            "--objective", "latency", "--budget", "1200", "-o", folder / "edgeward"),
                   check=True, stdout=subprocess.DEVNULL)
    auto_seconds = time.perf_counter() - started
    table = json.loads((folder / "edgeward" / "tries.json").read_text())
    chosen = table["tries"][table["chosen"]]
    edgeward_model = folder / "edgeward" / f"model.{chosen['format']}"
    models = {"float": float_model, "optimum": optimum, "edgeward": edgeward_model}
    runners = {label: open_model(path, threads=1) for label, path in models.items()}
    held_out = make_inputs(SAMPLES, seed=2)
    timings = interleaved_p50(runners, {k: v[:1] for k, v in held_out.items()})
    reference = outputs(runners["float"], held_out)
    results = {}
    for label, path in models.items():
        out = reference if label == "float" else outputs(runners[label], held_out)
        results[label] = {"file": path.name, "size_bytes": size_of(path), **timings[label],
                          "agreement": float((out.argmax(1) == reference.argmax(1)).mean())}
    e, o = results["edgeward"], results["optimum"]
    faster = sum(a <= b for a, b in zip(e["round_p50_ms"], o["round_p50_ms"], strict=True))
    return {
        "models": results,
        "chosen": {"label": chosen["label"], "format": chosen["format"], "auto_seconds": round(auto_seconds, 1)},
        "tries": [{k: t[k] for k in ("label", "format", "size_bytes", "agreement", "p50_ms", "passed", "error")}
                  for t in table["tries"]],
        "auto_float_p50_ms": table.get("float_p50_ms"), "int8_hardware": table.get("int8_hardware"),
        "float_logit_std": round(float(reference.std()), 4),
        "ratios": {"latency_edgeward_over_optimum": round(e["p50_ms"] / o["p50_ms"], 4),
                   "rounds_edgeward_faster": f"{faster}/{ROUNDS}",
                   "size_edgeward_over_optimum": round(e["size_bytes"] / o["size_bytes"], 4),
                   "agreement_edgeward_minus_optimum": round(e["agreement"] - o["agreement"], 4)},
    }


def lines_for(name: str, result: dict) -> list[str]:
    r = result["ratios"]
    lines = [f"## {name}", "", f"chosen by auto: {result['chosen']['label']} ({result['chosen']['format']}), "
             f"auto took {result['chosen']['auto_seconds']} s; float logits std {result['float_logit_std']}", "",
             "| model | size (MB) | p50 (ms, 1 thread) | agreement with float |", "|---|---|---|---|"]
    for label, m in result["models"].items():
        lines.append(f"| {label} ({m['file']}) | {m['size_bytes'] / 1e6:.2f} | {m['p50_ms']:.2f} | {m['agreement']:.3f} |")
    lines += ["", "| try | format | size (MB) | agreement | p50 (ms) | passed |", "|---|---|---|---|---|---|"]
    for t in result["tries"]:
        size = "–" if t["size_bytes"] is None else f"{t['size_bytes'] / 1e6:.2f}"
        p50 = "–" if t["p50_ms"] is None else f"{t['p50_ms']:.2f}"
        lines.append(f"| {t['label']} | {t['format']} | {size} | {t['agreement']} | {p50} | "
                     f"{'error' if t['error'] else t['passed']} |")
    met = {"latency": r["latency_edgeward_over_optimum"] <= TARGETS["latency"],
           "size": r["size_edgeward_over_optimum"] <= TARGETS["size"],
           "agreement": r["agreement_edgeward_minus_optimum"] >= 0}
    result["targets_met"] = met
    lines += ["", f"latency ratio edgeward/optimum: {r['latency_edgeward_over_optimum']:.3f} (target <= "
              f"{TARGETS['latency']}: {'met' if met['latency'] else 'missed'}); edgeward faster in "
              f"{r['rounds_edgeward_faster']} interleaved rounds",
              f"size ratio edgeward/optimum: {r['size_edgeward_over_optimum']:.3f} (target <= 1.0: "
              f"{'met' if met['size'] else 'missed'})",
              f"agreement difference edgeward-optimum: {r['agreement_edgeward_minus_optimum']:+.3f} (target >= 0: "
              f"{'met' if met['agreement'] else 'missed'})",
              f"int8 hardware: {(result['int8_hardware'] or {}).get('note', 'not checked (no int8 mode chosen)')}", ""]
    return lines


def main(names: list[str]) -> None:
    """One result file per model (auto_formats_<name>), written as soon as that model is done."""
    from toolkit.common.cpu import host_cpu_flags

    flags = sorted(host_cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512f", "avx2"})
    note = (f"CPU flags relevant to int8: {', '.join(flags) or 'none'} (Optimum's config targets AVX-512 VNNI; "
            "without VNNI onnxruntime's int8 kernels use AVX2 VPMADDUBSW)")
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_one(name, Path(tmp))
        lines = lines_for(name, result) + [note]
        write_results(f"auto_formats_{name}", {"result": result, "sequence": SEQUENCE, "image_size": IMAGE,
                                               "samples": SAMPLES, "targets": TARGETS, "host_int8_flags": flags},
                      lines)


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODELS))
