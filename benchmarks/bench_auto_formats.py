"""`quantize --mode auto --objective latency` across both formats against Hugging Face Optimum.

Two models built from a config (no download), 1 thread, batch 1:
  - BERT-like: hidden 256, 4 layers, 4 heads, sequence 128, 4 labels;
  - image: a small ResNet (ResNetConfig, 4 stages, 64x64 input, 10 labels) trained here on real
    data: scikit-learn's bundled digits (8x8 upsampled to 64x64, 3 channels), 1297 images for
    EPOCHS epochs (about 1.5 minutes on 2 idle cores, far longer under load); the other 500 are
    held out: 250 are auto's labelled --data (so its gate is the accuracy drop), 250 the
    agreement set. Held-out accuracy, logit std and training time are recorded (`training`,
    `float_logit_std`). 64x64, not 128x128, and 2 epochs keep the whole run under ~15 minutes
    on an idle 2-core machine (the shared one here is often several times slower).
Each is saved as a Hugging Face folder. Optimum: the folder exported with `main_export`, then
`ORTQuantizer` + `AutoQuantizationConfig.avx512_vnni(is_static=False)`. Edgeward:
`edgeward quantize FOLDER --mode auto --objective latency --data DATA` (both formats: the folder
is exported to ONNX and TFLite and every mode of each is tried). The float ONNX model, Optimum's
and Edgeward's chosen model are then timed in this process through the same runners
(`toolkit.runtime.open_model`, 1 thread), taking turns over ROUNDS rounds, and compared on size
and on argmax agreement with the float model over SAMPLES held-out inputs (image: 250 digits,
with accuracy against their labels too).

Run: .venv/bin/python benchmarks/bench_auto_formats.py [bert|image ...]   (results: auto_formats_<name>.json/.md)
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, write_results  # noqa: E402

SEQUENCE, IMAGE = 128, 64
SAMPLES, EVAL = 200, 64
DIGITS_TRAIN, DIGITS_COUNTS = 1297, (250, 250)  # digits: trained on / (auto data, agreement set) of the 500 left
EPOCHS, TRAIN_BATCH = 2, 64
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


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (8x8, 0..16) in a fixed shuffled order, upsampled to IMAGE x IMAGE
    (bilinear), grey repeated over 3 channels, normalised as ImageNet preprocessing would."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    pixels = torch.from_numpy(digits.images[order].astype(np.float32) / 16.0)[:, None]
    pixels = torch.nn.functional.interpolate(pixels, size=(IMAGE, IMAGE), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    return ((pixels.repeat(1, 3, 1, 1) - mean) / std).numpy(), digits.target[order].astype(np.int64)


def build_image(folder: Path) -> tuple[Path, str]:
    """A small ResNet trained on the first DIGITS_TRAIN digits; its held-out accuracy and the time
    taken go into training.json beside FOLDER (for the results)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1],
                          layer_type="basic", num_labels=10)
    config.image_size = IMAGE  # saved in config.json: the input shape Edgeward's export reads
    model = ResNetForImageClassification(config)  # transformers' own init: kaiming-normal convolutions
    images, labels = digits_images()
    train_x, train_y = torch.from_numpy(images[:DIGITS_TRAIN]), torch.from_numpy(labels[:DIGITS_TRAIN])
    steps_per_epoch = -(-DIGITS_TRAIN // TRAIN_BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=EPOCHS * steps_per_epoch)
    started = time.perf_counter()
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(DIGITS_TRAIN).split(TRAIN_BATCH):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=train_x[batch]).logits, train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.from_numpy(images[DIGITS_TRAIN:])).logits.numpy()
    facts = {"data": "sklearn load_digits", "train_images": DIGITS_TRAIN, "held_out_images": len(logits),
             "epochs": EPOCHS, "train_seconds": round(seconds, 1), "final_batch_loss": round(float(loss), 4),
             "held_out_accuracy": round(float((logits.argmax(1) == labels[DIGITS_TRAIN:]).mean()), 4),
             "held_out_logit_std": round(float(logits.std()), 4)}
    (folder.parent / "training.json").write_text(json.dumps(facts))
    model.save_pretrained(folder, safe_serialization=True)
    return folder, "image-classification"


def image_inputs(count: int, seed: int) -> dict[str, np.ndarray]:
    """Held-out digits (never trained on) with their labels: seed 1 takes from the front of the
    held-out part (the auto data), seed 2 from its back (the agreement set); disjoint while
    the two counts add up to at most the held-out size."""
    images, labels = digits_images()
    held_x, held_y = images[DIGITS_TRAIN:], labels[DIGITS_TRAIN:]
    assert 2 * count <= len(held_y), "the auto data and the agreement set would overlap"
    part = slice(0, count) if seed == 1 else slice(len(held_y) - count, len(held_y))
    return {"pixel_values": np.ascontiguousarray(held_x[part]), "labels": held_y[part]}


MODELS = {"bert": (build_bert, bert_inputs), "image": (build_image, image_inputs)}
COUNTS = {"image": DIGITS_COUNTS}  # (auto data, agreement set); default (EVAL, SAMPLES)


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
    auto_count, agreement_count = COUNTS.get(name, (EVAL, SAMPLES))
    hf, task = build(folder / "hf")
    training = folder / "training.json"
    float_model, optimum = optimum_model(hf, task, folder)
    np.savez(folder / "data.npz", **make_inputs(auto_count, seed=1))
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
    held_out = make_inputs(agreement_count, seed=2)
    timings = interleaved_p50(runners, {k: v[:1] for k, v in held_out.items()})
    reference = outputs(runners["float"], held_out)
    results = {}
    for label, path in models.items():
        out = reference if label == "float" else outputs(runners[label], held_out)
        results[label] = {"file": path.name, "size_bytes": size_of(path), **timings[label],
                          "agreement": float((out.argmax(1) == reference.argmax(1)).mean())}
        if "labels" in held_out:
            results[label]["accuracy"] = round(float((out.argmax(1) == held_out["labels"]).mean()), 4)
    e, o = results["edgeward"], results["optimum"]
    faster = sum(a <= b for a, b in zip(e["round_p50_ms"], o["round_p50_ms"], strict=True))
    return {
        "models": results,
        "chosen": {"label": chosen["label"], "format": chosen["format"], "auto_seconds": round(auto_seconds, 1)},
        "tries": [{k: t.get(k) for k in ("label", "format", "size_bytes", "agreement", "drop", "p50_ms", "passed",
                                         "error")}
                  for t in table["tries"]],
        "auto_float_p50_ms": table.get("float_p50_ms"), "int8_hardware": table.get("int8_hardware"),
        "load_average_1_5_15_min": [round(value, 2) for value in os.getloadavg()],  # after the timing
        "transformer_fusion": json.loads((folder / "edgeward" / "manifest.json").read_text())
        .get("quantization", {}).get("transformer_fusion"),
        "float_logit_std": round(float(reference.std()), 4), "agreement_samples": agreement_count,
        "auto_data_samples": auto_count, "training": json.loads(training.read_text()) if training.exists() else None,
        "ratios": {"latency_edgeward_over_optimum": round(e["p50_ms"] / o["p50_ms"], 4),
                   "rounds_edgeward_faster": f"{faster}/{ROUNDS}",
                   "size_edgeward_over_optimum": round(e["size_bytes"] / o["size_bytes"], 4),
                   "agreement_edgeward_minus_optimum": round(e["agreement"] - o["agreement"], 4)},
    }


def lines_for(name: str, result: dict) -> list[str]:
    r = result["ratios"]
    lines = [f"## {name}", "", f"chosen by auto: {result['chosen']['label']} ({result['chosen']['format']}), "
             f"auto took {result['chosen']['auto_seconds']} s; float logits std {result['float_logit_std']}; "
             f"agreement over {result.get('agreement_samples')} held-out inputs, auto's --data "
             f"{result.get('auto_data_samples')} others", ""]
    if result.get("training"):
        t = result["training"]
        lines += [f"float model: trained on {t['train_images']} {t['data']} images, {t['epochs']} epochs in "
                  f"{t['train_seconds']} s; held-out accuracy {t['held_out_accuracy']:.4f} over "
                  f"{t['held_out_images']} images, logit std {t['held_out_logit_std']}", ""]
    labelled = all("accuracy" in m for m in result["models"].values())
    lines += ["| model | size (MB) | p50 (ms, 1 thread) | agreement with float |" + (" accuracy |" if labelled else ""),
              "|---|---|---|---|" + ("---|" if labelled else "")]
    for label, m in result["models"].items():
        lines.append(f"| {label} ({m['file']}) | {m['size_bytes'] / 1e6:.2f} | {m['p50_ms']:.2f} | {m['agreement']:.3f} |"
                     + (f" {m['accuracy']:.3f} |" if labelled else ""))
    lines += ["", "| try | format | size (MB) | agreement | drop (points) | p50 (ms) | passed |",
              "|---|---|---|---|---|---|---|"]
    for t in result["tries"]:
        size = "–" if t["size_bytes"] is None else f"{t['size_bytes'] / 1e6:.2f}"
        p50 = "–" if t["p50_ms"] is None else f"{t['p50_ms']:.2f}"
        drop = "–" if t.get("drop") is None else t["drop"]
        lines.append(f"| {t['label']} | {t['format']} | {size} | {t['agreement']} | {drop} | {p50} | "
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
              f"int8 hardware: {(result['int8_hardware'] or {}).get('note', 'not checked (no int8 mode chosen)')}"]
    if result.get("load_average_1_5_15_min"):
        lines.append(f"load average after timing (1/5/15 min, 2 cores shared): {result['load_average_1_5_15_min']}")
    fusion = result.get("transformer_fusion")
    if fusion is not None:
        lines.append("transformer fusion before quantization: " + (
            f"{fusion['fused_ops']} (from {fusion['detected_from']}), relative error {fusion['max_relative_error']}"
            if fusion.get("applied") else f"not applied ({fusion.get('reason')})"))
    lines.append("")
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
