"""A quick slice of the fuzz suite (scripts/fuzz_suite.py runs the full one): a few hundred
mutated ONNX, TFLite, safetensors and YAML inputs through the real entry points, in
supervised worker children. Every input must end in a result or a clean error: no
traceback, no hang; a native crash is contained by the child (and counted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

fuzz_suite = importlib.import_module("fuzz_suite")
fuzz_inputs = importlib.import_module("fuzz_inputs")

MODEL_TARGETS = ["open_run", "load_source", "estimate", "check_safetensors", "rebuild"]
YAML_TARGETS = ["profile", "scenario", "recipe"]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, digits_cnn, digits_cnn_onnx, digits_cnn_tflite):
    """Seeds from the session's exported digits models (no extra export here)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("fuzz-seeds")
    weights = folder / "digits-cnn.safetensors"
    save_file({k: v.contiguous() for k, v in digits_cnn.state_dict().items()}, str(weights))
    from toolkit.costs.example import EXAMPLE

    (folder / "scenario.yaml").write_text(EXAMPLE)
    return {
        "onnx": [{"path": str(digits_cnn_onnx), "role": "digits"},
                 {"path": str(fuzz_inputs._ops_model(folder / "ops.onnx")), "role": "ops"}],
        "tflite": [{"path": str(digits_cnn_tflite), "role": "digits"}],
        "safetensors": [{"path": str(weights), "role": "digits-cnn"}],
        "yaml": [{"path": str(ROOT / "device_profiles" / "raspberry-pi-5.yaml"), "role": "profile"},
                 {"path": str(folder / "scenario.yaml"), "role": "scenario"},
                 {"path": str(ROOT / "toolkit" / "pipeline" / "demo.yaml"), "role": "recipe"}],
    }


def run_slice(seeds, folder: Path, count: int, targets: list[str]) -> dict:
    tasks = fuzz_inputs.make_tasks(seeds, folder / "inputs", count, seed=11, targets=targets)
    results = fuzz_suite.run_inputs(tasks, folder, timeout_s=15, memory_mb=3072, log=lambda _m: None)
    figures = fuzz_suite.summarise(results, tasks)
    assert figures["inputs_tried"] == count
    figures["bad"] = [f"{f['outcome']} {f['target']} {Path(f['path']).name}: {f.get('message', '')[:150]}"
                      for f in figures["failures"] if f["outcome"] in ("traceback", "hang")]
    return figures


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_fuzz_of_model_files_has_no_tracebacks_or_hangs(seeds, tmp_path):
    figures = run_slice(seeds, tmp_path, 240, MODEL_TARGETS)
    assert figures["accepted"] > 0 and figures["clean_errors"] > 80  # the mutations do reach the parsers
    assert figures["bad"] == []
    assert figures["hangs"] == 0 and figures["tracebacks"] == 0


@pytest.mark.timeout(300)
def test_quick_fuzz_of_yaml_files_has_no_tracebacks_or_hangs(seeds, tmp_path):
    figures = run_slice(seeds, tmp_path, 80, YAML_TARGETS)
    assert figures["clean_errors"] > 20
    assert figures["bad"] == []


def test_mutators_produce_the_promised_kinds_of_damage(seeds):
    import random

    onnx_bytes = Path(seeds["onnx"][0]["path"]).read_bytes()
    rng = random.Random(3)
    assert len(fuzz_inputs.truncate(onnx_bytes, rng)) < len(onnx_bytes)
    assert fuzz_inputs.bit_flips(onnx_bytes, rng) != onnx_bytes
    tflite = Path(seeds["tflite"][0]["path"]).read_bytes()
    assert fuzz_inputs._shape_vectors(tflite), "the TFLite shape vectors should be found"
    assert fuzz_inputs.tflite_structured(tflite, rng) != tflite
    mutated = fuzz_inputs.safetensors_structured(Path(seeds["safetensors"][0]["path"]).read_bytes(), rng)
    assert mutated[:8] != b"" and mutated != Path(seeds["safetensors"][0]["path"]).read_bytes()
    assert importlib.util.find_spec("onnx")
