#!/usr/bin/env python
"""Does the device runner measure what a bare timing loop measures? And how far is the
roofline estimate from the measurement on this host?

For each digits model (ONNX and TFLite, exported here from the builtin CNN):
1. in ONE process and ONE runtime session, alternate blocks of the runner's own timing
   loop (`runner.time_runs`, the loop `runner.py bench` uses) and a bare
   `perf_counter(); session.run(); perf_counter()` loop, and compare their p50s (target: within 5%);
2. run the runner out of process through the `local` transport (what `edgeward bench` does);
3. estimate the same model for `localhost` and put the estimate next to the measurement.

Writes benchmarks/results/runner.json and prints a table.  Usage: .venv/bin/python scripts/bench_runner.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def export_models(folder: Path) -> dict[str, Path]:
    import litert_torch
    import torch

    from toolkit.models.digits import load_builtin

    model = load_builtin("digits-cnn")
    onnx_path, tflite_path = folder / "digits-cnn.onnx", folder / "digits-cnn.tflite"
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(onnx_path), dynamo=True, external_data=False,
                      input_names=["x"], output_names=["logits"], verbose=False)
    litert_torch.convert(model, (torch.zeros(1, 1, 8, 8),)).export(str(tflite_path))
    return {"onnx": onnx_path, "tflite": tflite_path}


def same_session(path: Path, runs: int, blocks: int) -> dict:
    """Runner loop vs bare loop, interleaved in blocks so drift and load hit both alike."""
    from toolkit.devices import runner

    model, numpy = runner.open_model(str(path), 1)
    feeds = runner.first_batch(runner.load_inputs(None, model, numpy), model)
    prepared = model.prepare(feeds)
    for _ in range(200):
        model.run_prepared(prepared)
    runner_p50, bare_p50 = [], []
    for _ in range(blocks):
        times = runner.time_runs(model, prepared, runs)  # the runner's own timed loop
        runner_p50.append(runner.summarize(times)["latency_ms"]["p50"])
        bare = []  # a bare loop on the same session object
        run = model.session.run if hasattr(model, "session") else None
        for _ in range(runs):
            if run is not None:
                start = time.perf_counter()
                run(None, feeds)
                bare.append((time.perf_counter() - start) * 1000)
            else:
                interpreter, detail = model.interpreter, model.details[0]
                array = prepared[0][0][1]
                start = time.perf_counter()
                interpreter.set_tensor(detail["index"], array)
                interpreter.invoke()
                interpreter.get_tensor(model.outputs[0]["index"])
                bare.append((time.perf_counter() - start) * 1000)
        bare_p50.append(statistics.median(bare))
    runner_median, bare_median = statistics.median(runner_p50), statistics.median(bare_p50)
    return {"runner_p50_ms": round(runner_median, 5), "bare_loop_p50_ms": round(bare_median, 5),
            "ratio": round(runner_median / bare_median, 4), "within_5_percent": abs(runner_median / bare_median - 1) <= 0.05,
            "blocks": blocks, "runs_per_block": runs, "runtime": model.runtime, "delegate": model.delegate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "runner.json"))
    args = parser.parse_args()

    from toolkit.artifacts import atomic_write_json
    from toolkit.bench.estimate import estimate
    from toolkit.devices import bench_on_device, get_profile

    results = {"host": {}, "models": {}}
    with tempfile.TemporaryDirectory() as folder:
        models = export_models(Path(folder))
        profile = get_profile("localhost")
        results["host"] = {"cpu": profile.value("cpu"), "peak_fp32_gops": profile.accelerators()[0]["peak_gops"]
                           ["fp32"]["value"], "memory_bandwidth_gbps": profile.value("memory_bandwidth_gbps")}
        for name, path in models.items():
            in_process = same_session(path, args.runs, args.blocks)
            out_of_process = bench_on_device(path, "localhost", runs=args.runs * 2, warmup=200, threads=1)
            guess = estimate(path, profile)
            measured = out_of_process["latency_ms"]["p50"]
            results["models"][name] = {
                "same_session": in_process,
                "local_transport": {"p50_ms": measured, "p90_ms": out_of_process["latency_ms"]["p90"],
                                    "runs": out_of_process["runs"], "drift": out_of_process["drift"]},
                "estimate": {"latency_ms": guess["latency"]["latency_ms"], "bound": guess["latency"]["bound"],
                             "flops": guess["flops"], "macs": guess["macs"],
                             "estimate_over_measured": round(guess["latency"]["latency_ms"] / measured, 3)},
            }
    atomic_write_json(args.output, results)
    print(f"{'model':<7} {'runner p50':>11} {'bare p50':>10} {'ratio':>6}  {'local-transport p50':>19}  "
          f"{'estimate':>9} {'est/meas':>8}  bound")
    for name, row in results["models"].items():
        same, est = row["same_session"], row["estimate"]
        print(f"{name:<7} {same['runner_p50_ms']:>9.5f}ms {same['bare_loop_p50_ms']:>8.5f}ms {same['ratio']:>6.3f}  "
              f"{row['local_transport']['p50_ms']:>17.5f}ms  {est['latency_ms']:>7.5f}ms {est['estimate_over_measured']:>8.3f}"
              f"  {est['bound']}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
