"""Estimates that learn (issue 14, item 7): leave-one-model-out estimate/measured ratios on this host.

Nine models, all built here without a download:
  - the builtin digits CNN: ONNX and TFLite, fp32 and static int8 (`edgeward export`, `edgeward quantize`);
  - a tiny ViT (ViTConfig: 64x64 image, patch 8, hidden 128, 4 layers): ONNX and TFLite;
  - a small DistilBERT (dim 256, 4 layers, sequence 128): ONNX;
  - a small ResNet (ResNetConfig, 4 stages, 128x128 image): ONNX and TFLite;
the Hugging Face ones saved from a config and exported with `edgeward export FOLDER`.

Each model is timed two ways, 1 thread, --rounds rounds taking turns (a burst of load on the shared
host hits all models alike), the fastest round's p50 kept (a busy host only slows a run down; the
calibration takes the same figure of a model's stored runs):
  - wall clock through `toolkit.bench.bench` on `localhost` (the local transport), which stores every
    run as a calibration point: what a user measures, stretched by whatever else the host runs;
  - the CPU time of each inference in this process (the runtime alone, inputs prepared, as the
    device runner times it), which other processes cannot stretch; stored as points of their own.
Then, for each model, the estimate is made as for a model the device never measured: its own runs
left out (leave one model file out), and, stricter, the runs of every file of the same network left
out (leave one network out). "before" is the plain roofline; "after" the calibrated estimate.

Run: .venv/bin/python benchmarks/bench_estimates.py [--work DIR] [--rounds N] [--runs N]
(results: benchmarks/results/estimates.json/.md; built models are kept in --work and reused).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, write_results  # noqa: E402

GOAL = 0.30  # within ±30% of measured


def build_vit(folder: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=64, patch_size=8, num_channels=3, hidden_size=128, num_hidden_layers=4,
                       num_attention_heads=4, intermediate_size=512, num_labels=10)
    ViTForImageClassification(config).eval().save_pretrained(folder, safe_serialization=True)


def build_distilbert(folder: Path) -> None:
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(dim=256, n_layers=4, n_heads=4, hidden_dim=1024, vocab_size=30522,
                              max_position_embeddings=512, num_labels=4)
    DistilBertForSequenceClassification(config).eval().save_pretrained(folder, safe_serialization=True)


def build_resnet(folder: Path) -> None:
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1],
                          layer_type="basic", num_labels=10)
    config.image_size = 128  # read by the export and by bench's shapes
    ResNetForImageClassification(config).eval().save_pretrained(folder, safe_serialization=True)


HF_BUILDERS = {"vit": build_vit, "distilbert": build_distilbert, "resnet": build_resnet}
# (name, network, how it is made)
MODELS = [
    ("digits-onnx-fp32", "digits", ("export", "builtin:digits-cnn", "onnx")),
    ("digits-onnx-int8", "digits", ("quantize", "digits-onnx-fp32", "static-int8")),
    ("digits-tflite-fp32", "digits", ("export", "builtin:digits-cnn", "tflite")),
    ("digits-tflite-int8", "digits", ("quantize", "digits-tflite-fp32", "static-int8")),
    ("vit-onnx-fp32", "vit", ("export", "hf:vit", "onnx")),
    ("vit-tflite-fp32", "vit", ("export", "hf:vit", "tflite")),
    ("distilbert-onnx-fp32", "distilbert", ("export", "hf:distilbert", "onnx")),
    ("resnet-onnx-fp32", "resnet", ("export", "hf:resnet", "onnx")),
    ("resnet-tflite-fp32", "resnet", ("export", "hf:resnet", "tflite")),
]


def run(command: list) -> None:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(map(str, command))}\n{done.stderr[-3000:]}")


def model_file(folder: Path) -> Path:
    return next(p for p in sorted(folder.iterdir()) if p.suffix in (".onnx", ".tflite"))


def build(work: Path) -> dict[str, Path]:
    """Every model's file, building what is not in `work` yet."""
    files = {}
    for name, _, (how, source, target) in MODELS:
        folder = work / name
        if not (folder / "manifest.json").exists():
            if source.startswith("hf:"):
                hf_folder = work / "hf" / source[3:]
                if not (hf_folder / "config.json").exists():
                    HF_BUILDERS[source[3:]](hf_folder)
                source = hf_folder
            if how == "export":
                run(edgeward("export", source, "--to", target, "-o", folder, "--force"))
            else:
                run(edgeward("quantize", work / source, "--mode", target, "--calibration", "builtin:digits:train",
                             "-o", folder, "--force"))
            print(f"built {name}", flush=True)
        files[name] = model_file(folder)
    return files


def measure(files: dict[str, Path], rounds: int, runs: int) -> dict[str, dict]:
    """Wall-clock p50 of each model on localhost through `bench` (the local transport), each run
    stored as a calibration point by `bench` itself."""
    from toolkit.bench import bench

    measured: dict[str, list] = {name: [] for name in files}
    for round_index in range(rounds):
        for name, path in files.items():
            record = bench(path, device="localhost", runs=runs, warmup=max(3, runs // 10), threads=1)
            measured[name].append(record["latency_ms"]["p50"])
            print(f"wall round {round_index + 1}/{rounds} {name}: p50 {record['latency_ms']['p50']:.4f} ms", flush=True)
    return summarise(measured)


def measure_cpu_time(files: dict[str, Path], rounds: int, runs: int) -> dict[str, dict]:
    """p50 of the CPU time of each inference (1 thread: the work runs in the calling thread), which
    other processes on a shared host cannot stretch; each round stored as a calibration point."""
    from toolkit.artifacts import sha256_file
    from toolkit.bench.calibration import cpu_family_of, record_run, run_point
    from toolkit.bench.estimate import estimate
    from toolkit.bench.shapes import resolve_shapes, sample_inputs
    from toolkit.devices import get_profile

    profile = get_profile("localhost")
    opened = {}
    for name, path in files.items():
        resolved = resolve_shapes(path)
        figures = estimate(path, profile, input_shapes={k: v["shape"] for k, v in resolved.items()})
        opened[name] = (raw_runner(path, sample_inputs(resolved)), run_point(figures, cpu_family_of(profile)),
                        sha256_file(path))
    measured: dict[str, list] = {name: [] for name in files}
    for round_index in range(rounds):
        for name, (run_once, point, sha) in opened.items():
            for _ in range(max(3, runs // 10)):
                run_once()
            samples = []
            for _ in range(runs):
                started = time.thread_time_ns()
                run_once()
                samples.append((time.thread_time_ns() - started) / 1e6)
            p50 = statistics.median(samples)
            measured[name].append(p50)
            record_run("localhost", {"model_sha256": sha, "model": str(files[name]), **point, "shapes": None,
                                     "threads": 1, "measured_ms": p50, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                     "timing": "thread CPU time"})
            print(f"cpu round {round_index + 1}/{rounds} {name}: p50 {p50:.4f} ms", flush=True)
    return summarise(measured)


def raw_runner(path: Path, feeds: dict):
    """One inference with the runtime alone at 1 thread, inputs already in the model's dtypes (as the
    device runner times it: session.run, or set_tensor + invoke + get_tensor)."""
    import numpy as np

    if path.suffix == ".onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, feeds)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    arrays = [(d["index"], np.asarray(feeds[d["name"]] if d["name"] in feeds else next(iter(feeds.values())))
               .reshape(d["shape"]).astype(d["dtype"])) for d in interpreter.get_input_details()]
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def run_once():
        for index, array in arrays:
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in outputs]

    return run_once


def summarise(measured: dict[str, list]) -> dict[str, dict]:
    # a busy host only ever slows a run down: the fastest round is the least disturbed (the
    # calibration takes the same figure of a model's stored runs)
    return {name: {"p50_ms": min(values), "median_of_rounds_ms": statistics.median(values), "rounds_p50_ms": values}
            for name, values in measured.items()}


def leave_out_estimates(files: dict[str, Path], networks: dict[str, str]) -> dict[str, dict]:
    """The roofline and the calibrated estimate of each model with its own runs (and its network's) left out."""
    from toolkit.artifacts import sha256_file
    from toolkit.bench.calibration import calibrated_estimate
    from toolkit.bench.estimate import estimate
    from toolkit.bench.shapes import resolve_shapes
    from toolkit.devices import get_profile

    profile = get_profile("localhost")
    shas = {name: sha256_file(path) for name, path in files.items()}
    rows = {}
    for name, path in files.items():
        shapes = {k: v["shape"] for k, v in resolve_shapes(path).items()}
        figures = estimate(path, profile, input_shapes=shapes)
        same_network = {shas[other] for other in files if networks[other] == networks[name]}
        by_file = calibrated_estimate(profile, figures, exclude_sha256={shas[name]})
        by_network = calibrated_estimate(profile, figures, exclude_sha256=same_network)
        rows[name] = {"roofline_ms": figures["latency"]["latency_ms"], "precision": figures["model"]["precision"],
                      "nodes": figures["node_count"], "flops": figures["flops"],
                      "leave_one_model_out": by_file, "leave_one_network_out": by_network}
    return rows


def compare(files, networks, measured: dict[str, dict], config: Path) -> tuple[list[dict], dict, list[str]]:
    """Leave-out ratios against one set of measurements, learning from the points stored in `config`."""
    os.environ["EDGEWARD_CONFIG"] = str(config)
    estimates = leave_out_estimates(files, networks)
    rows, table = [], ["| model | precision | nodes | measured p50 ms | roofline/measured | after, one model out | "
                       "after, one network out |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, _, _ in MODELS:
        p50 = measured[name]["p50_ms"]
        row = estimates[name]
        before = row["roofline_ms"] / p50
        by_file = row["leave_one_model_out"]["latency_ms"] / p50
        by_network = row["leave_one_network_out"]["latency_ms"] / p50
        rows.append({"model": name, "measured": measured[name], "before_ratio": round(before, 3),
                     "after_ratio_one_model_out": round(by_file, 3),
                     "after_ratio_one_network_out": round(by_network, 3), **row})
        table.append(f"| {name} | {row['precision']} | {row['nodes']} | {p50:.4f} | {before:.2f} | {by_file:.2f} | "
                     f"{by_network:.2f} |")

    def within(key):
        return sum(1 for r in rows if abs(r[key] - 1) <= GOAL)

    summary = {key: f"{within(key)} of {len(rows)}"
               for key in ("before_ratio", "after_ratio_one_model_out", "after_ratio_one_network_out")}
    table += ["", f"Within ±30% of measured: roofline {summary['before_ratio']}; calibrated, one model left out "
                  f"{summary['after_ratio_one_model_out']}; one network left out {summary['after_ratio_one_network_out']}."]
    return rows, summary, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgeward-bench-estimates")
    parser.add_argument("--rounds", type=int, default=5)  # KEPT_RUNS_PER_MODEL: every round stays a point
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--reuse-measurements", action="store_true",
                        help="estimate from the measurements and calibration points a previous run left in --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    files = build(args.work)
    networks = {name: network for name, network, _ in MODELS}
    measured_file = args.work / "measured.json"
    configs = {"wall": args.work / "config", "cpu": args.work / "config-cpu-time"}
    if args.reuse_measurements and measured_file.exists():
        measured = json.loads(measured_file.read_text())
    else:
        for config in configs.values():
            for stale in (config / "calibration").glob("*.json"):
                stale.unlink()
        load_before = os.getloadavg()
        os.environ["EDGEWARD_CONFIG"] = str(configs["wall"])
        measured = {"wall": measure(files, args.rounds, args.runs)}
        os.environ["EDGEWARD_CONFIG"] = str(configs["cpu"])
        measured["cpu"] = measure_cpu_time(files, args.rounds, args.runs)
        measured["load_average"] = {"before": load_before, "after": os.getloadavg()}
        measured_file.write_text(json.dumps(measured, indent=2))
    results, lines = {}, []
    titles = {"wall": "Wall-clock p50 through `edgeward bench` (the local transport): what a user measures here",
              "cpu": "CPU time of each inference (in process, 1 thread): what contention on the shared host cannot stretch"}
    for kind, config in configs.items():
        rows, summary, table = compare(files, networks, measured[kind], config)
        results[kind] = {"summary": summary, "models": rows}
        lines += [f"## {titles[kind]}", "", *table, ""]
    load = measured["load_average"]
    lines.append(f"Load average (1, 5, 15 min) before measuring {' '.join(f'{v:.2f}' for v in load['before'])}, after "
                 f"{' '.join(f'{v:.2f}' for v in load['after'])}, on {os.cpu_count()} cores shared with other work. "
                 f"1 thread; {args.rounds} rounds of {args.runs} runs taking turns; measured = the fastest round's p50.")
    write_results("estimates", {"goal": f"within ±{GOAL:.0%} of measured", "threads": 1, "rounds": args.rounds,
                                "runs": args.runs, "load_average": load, **results}, lines)


if __name__ == "__main__":
    main()
