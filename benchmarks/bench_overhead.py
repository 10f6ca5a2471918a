"""Edgeward's own overhead: CLI wall time against calling the libraries directly.

Each pair runs as fresh processes in this one script, so interpreter start-up and
imports are counted on both sides:
  - export: `edgeward export builtin:digits-cnn --to onnx` against a script that does the
    same work itself: torch.onnx.export(dynamo=True), onnx.checker.check_model(full_check=True)
    and an onnxruntime run against torch on random inputs (the export error Edgeward records);
  - quantize: `edgeward quantize MODEL --mode dynamic-int8` against quant_pre_process +
    quantize_dynamic called directly;
  - `edgeward --help` start-up time.
Target: <= 1.2x for export and quantize.

Run: .venv/bin/python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import edgeward, wall, write_results  # noqa: E402

REPEATS = 3

# The same work as `edgeward export`: export, check, then run the new model against the
# source on random inputs to measure the export error (onnxruntime included).
DIRECT_EXPORT = """
import sys, torch, onnx, onnxruntime, numpy
from toolkit.models.digits import load_builtin
model = load_builtin("digits-cnn")
x = torch.zeros(1, 1, 8, 8)
torch.onnx.export(model, (x,), sys.argv[1], dynamo=True, external_data=False, input_names=["x"])
onnx.checker.check_model(sys.argv[1], full_check=True)
sample = torch.rand(8, 1, 8, 8)
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
error = max(abs(session.run(None, {"x": sample[i : i + 1].numpy()})[0] - model(sample[i : i + 1]).detach().numpy()).max()
            for i in range(8))
print(error)
"""

DIRECT_QUANTIZE = """
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
quant_pre_process(sys.argv[1], sys.argv[2] + ".pre.onnx")
quantize_dynamic(sys.argv[2] + ".pre.onnx", sys.argv[2], weight_type=QuantType.QInt8)
"""


def median_wall(make_command, env) -> float:
    return statistics.median(wall(make_command(i), env=env) for i in range(REPEATS))


def main() -> None:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["EDGEWARD_CACHE"] = str(tmp / "cache")
        subprocess.run(edgeward("export", "builtin:digits-cnn", "--to", "onnx", "-o", tmp / "warm"),
                       check=True, capture_output=True, env=env)  # trains and caches the builtin model once
        cli_export = median_wall(lambda i: edgeward("export", "builtin:digits-cnn", "--to", "onnx",
                                                    "-o", tmp / f"e{i}", "--force"), env)
        direct_export = median_wall(lambda i: [sys.executable, "-c", DIRECT_EXPORT, str(tmp / f"d{i}.onnx")], env)
        model = tmp / "warm" / "model.onnx"
        cli_quantize = median_wall(lambda i: edgeward("quantize", model, "--mode", "dynamic-int8",
                                                      "-o", tmp / f"q{i}", "--force"), env)
        direct_quantize = median_wall(lambda i: [sys.executable, "-c", DIRECT_QUANTIZE, str(model),
                                                 str(tmp / f"dq{i}.onnx")], env)
        help_seconds = statistics.median(wall(edgeward("--help"), env=env) for _ in range(5))
        python_seconds = statistics.median(wall([sys.executable, "-c", "pass"], env=env) for _ in range(5))
    ratios = {"export": cli_export / direct_export, "quantize": cli_quantize / direct_quantize}
    lines = ["| work | edgeward CLI (s) | libraries directly (s) | ratio (target <= 1.2) |", "|---|---|---|---|",
             f"| export digits-cnn to ONNX | {cli_export:.2f} | {direct_export:.2f} | {ratios['export']:.2f} |",
             f"| quantize dynamic-int8 | {cli_quantize:.2f} | {direct_quantize:.2f} | {ratios['quantize']:.2f} |",
             "", f"`edgeward --help`: {help_seconds * 1000:.0f} ms (bare `python -c pass`: {python_seconds * 1000:.0f} ms)"]
    write_results("overhead", {"seconds": {"cli_export": cli_export, "direct_export": direct_export,
                                           "cli_quantize": cli_quantize, "direct_quantize": direct_quantize,
                                           "help": help_seconds, "python_start": python_seconds},
                               "ratios": ratios, "repeats": REPEATS}, lines)


if __name__ == "__main__":
    main()
