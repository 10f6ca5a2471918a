"""Throughput of `toolkit.validate.validate` against a plain onnxruntime loop, same run, same data.

Models: the builtin digits CNN exported to ONNX (float, dynamic batch) and its static int8
QDQ version (`toolkit.quantize.quantize`). Data: the digits test split (450 examples).

Both sides do the same work: run the candidate and the reference over the data in batches
of 256 and compare them. The plain loop computes only top-1 accuracy of each and argmax
agreement; `validate` also computes max/mean abs error, cosine, SQNR, NaN/Inf counts and
the gates. Two settings, timed in interleaved rounds so load from other processes falls
on both alike:
  warm  the models are opened once (validate is given the open runners; the loop reuses
        its sessions): the steady-state cost of a validation;
  cold  everything from the file paths, data spec included, as `edgeward validate` does:
        the loop opens two InferenceSessions and loads the data too.
The figure is samples/s (450 / median seconds) and the ratio validate / plain loop.
The two settings run in separate phases, and the order of the two sides alternates.
Target: >= 0.8x.

Run: .venv/bin/python scripts/bench_validate.py [--rounds N]
Writes benchmarks/results/validate.json and validate.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_results  # noqa: E402

BATCH = 256


def build_models(work: Path) -> tuple[Path, Path]:
    import torch

    from toolkit.models.digits import load_builtin
    from toolkit.quantize import quantize

    float_path = work / "digits.onnx"
    torch.onnx.export(load_builtin("digits-cnn"), (torch.zeros(2, 1, 8, 8),), str(float_path), dynamo=True,
                      external_data=False, input_names=["x"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    int8 = quantize(float_path, "static-int8", work / "int8", calibration="builtin:digits:train")
    return int8.model_path, float_path


def plain_loop(cand_session, ref_session, x, labels) -> dict:
    """What a user would write by hand: two sessions, batches, argmax, accuracy, agreement."""
    cand_chunks, ref_chunks = [], []
    for start in range(0, len(x), BATCH):
        batch = x[start : start + BATCH]
        cand_chunks.append(cand_session.run(None, {"x": batch})[0])
        ref_chunks.append(ref_session.run(None, {"x": batch})[0])
    cand, ref = np.concatenate(cand_chunks), np.concatenate(ref_chunks)
    return {"candidate_accuracy": float((cand.argmax(1) == labels).mean()),
            "reference_accuracy": float((ref.argmax(1) == labels).mean()),
            "agreement": float((cand.argmax(1) == ref.argmax(1)).mean())}


def session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    from toolkit.data import load_data
    from toolkit.runtime import open_model
    from toolkit.validate import validate

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        candidate, reference = build_models(Path(tmp))
        dataset = load_data("builtin:digits:test")
        x, labels = dataset.inputs["x"], dataset.labels
        count = len(x)
        cand_session, ref_session = session(candidate), session(reference)
        cand_runner, ref_runner = open_model(candidate), open_model(reference)

        def warm_validate():
            return validate(cand_runner, ref_runner, dataset, record=False)

        def warm_plain():
            return plain_loop(cand_session, ref_session, x, labels)

        def cold_validate():
            return validate(candidate, reference, "builtin:digits:test", record=False)

        def cold_plain():
            data = load_data("builtin:digits:test")
            return plain_loop(session(candidate), session(reference), data.inputs["x"], data.labels)

        # the figures agree before anything is timed
        report, plain = warm_validate(), warm_plain()
        figures = report.outputs[0]
        assert abs(figures.candidate_accuracy - plain["candidate_accuracy"]) < 1e-9
        assert abs(figures.agreement - plain["agreement"]) < 1e-9

        timings: dict[str, list[float]] = {}
        phases = {"warm": {"validate": warm_validate, "plain": warm_plain},
                  "cold": {"validate": cold_validate, "plain": cold_plain}}
        for setting, functions in phases.items():
            if setting == "cold":
                # idle sessions' worker threads keep spinning after a run and would slow whatever
                # runs next: close the warm ones before the cold phase
                del cand_session, ref_session, cand_runner, ref_runner
            for function in functions.values():  # warm-up
                function()
            for round_index in range(args.rounds):
                order = list(functions.items())
                if round_index % 2:
                    order.reverse()  # ABBA: neither side always runs first
                for name, function in order:
                    started = time.perf_counter()
                    function()
                    timings.setdefault(f"{setting}_{name}", []).append(time.perf_counter() - started)

    results = {}
    for setting in ("warm", "cold"):
        validate_s = statistics.median(timings[f"{setting}_validate"])
        plain_s = statistics.median(timings[f"{setting}_plain"])
        results[setting] = {
            "validate_samples_per_s": round(count / validate_s, 1),
            "plain_samples_per_s": round(count / plain_s, 1),
            "validate_ms": round(validate_s * 1000, 3),
            "plain_ms": round(plain_s * 1000, 3),
            "ratio": round(plain_s / validate_s, 3),
        }
    lines = [f"digits test split: {count} examples, batch {BATCH}, static int8 vs float ONNX, "
             f"median of {args.rounds} interleaved rounds", "",
             "| setting | validate (samples/s) | plain onnxruntime loop (samples/s) | ratio (target >= 0.8) |",
             "|---|---|---|---|"]
    for setting, row in results.items():
        lines.append(f"| {setting} | {row['validate_samples_per_s']} | {row['plain_samples_per_s']} | "
                     f"{row['ratio']}x |")
    lines.append("")
    lines.append(f"accuracy int8 {figures.candidate_accuracy:.4f}, float {figures.reference_accuracy:.4f}, "
                 f"agreement {figures.agreement:.4f} (same in both)")
    write_results("validate", {"examples": count, "batch": BATCH, "rounds": args.rounds, "results": results,
                               "target_ratio": 0.8}, lines)
    for setting, row in results.items():
        print(f"ratio ({setting}): {row['ratio']}x")


if __name__ == "__main__":
    main()
