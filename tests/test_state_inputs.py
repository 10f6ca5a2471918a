"""Inputs whose examples are not on axis 0, and 0-d inputs, through every batching path.

silero-vad (from the silero-vad wheel, located without importing it) takes `input` [N, 512],
`state` [2, N, 128] (examples on axis 1) and `sr`, an int64 0-d scalar; it gives `output`
[N, 1] and `stateN` [2, N, 128]. Batched runs (host, per-layer, the device runner) must cut
`state` on axis 1, pass `sr` whole, and join `stateN` on axis 1 again: the result must be
the same as one run over all the examples.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

CHUNKS = 13  # not a multiple of the batch sizes below: the last batch is short


def _silero(name: str = "silero_vad.onnx") -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        pytest.skip("the silero-vad wheel is not installed (scripts/setup installs it with --no-deps)")
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} is missing from the installed silero-vad wheel")
    return path


def _feeds(count: int = CHUNKS, seed: int = 0) -> dict[str, np.ndarray]:
    """Chunks of 512 samples (32 ms at 16 kHz) of three tones plus noise; a zero state; sr."""
    rng = np.random.default_rng(seed)
    t = np.arange(512) / 16000
    chunks = [sum(rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(80, 3000) * t + rng.uniform(0, 6.3))
                  for _ in range(3)) + rng.normal(0, 0.02, 512) for _ in range(count)]
    return {"input": np.array(chunks, np.float32), "state": np.zeros((2, count, 128), np.float32),
            "sr": np.array(16000, dtype=np.int64)}


@pytest.fixture(scope="module")
def vad_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vad") / "vad.npz"
    np.savez(path, **_feeds())
    return path


@pytest.fixture(scope="module")
def vad_dynamic(tmp_path_factory) -> Path:
    from toolkit.quantize import quantize

    out = tmp_path_factory.mktemp("vad-q") / "dyn"
    quantize(_silero(), "dynamic-int8", out)
    return out / "model.onnx"


@pytest.mark.parametrize("name", ["silero_vad.onnx", "silero_vad_16k_op15.onnx"])
@pytest.mark.parametrize("batch_size", [1, 2, 5, 256])
def test_run_batched_matches_one_whole_run(name, batch_size):
    from toolkit.runtime import open_model, run_batched

    runner = open_model(_silero(name))
    feeds = _feeds()
    whole = runner.run(feeds)
    got = run_batched(runner, feeds, batch_size=batch_size)
    assert [g.shape for g in got] == [(CHUNKS, 1), (2, CHUNKS, 128)]
    for expected, actual in zip(whole, got, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_output_axis_breaks_ties_with_the_input_signature():
    from toolkit.common.batching import output_axis
    from toolkit.common.tensors import TensorSpec

    state = TensorSpec("state", [2, None, 128], "float32")
    chunk = TensorSpec("input", [None, None], "float32")
    inputs = [(chunk, 0), (state, 1), (TensorSpec("sr", [], "int64"), None)]
    # a batch of 2: stateN [2, 2, 128] is 2 long on axes 0 and 1; state's fixed dims say 1
    assert output_axis(np.zeros((2, 2, 128)), 2, TensorSpec("stateN", [None] * 3, "float32"), inputs) == 1
    assert output_axis(np.zeros((1, 1)), 1, TensorSpec("output", [None, 1], "float32"), inputs) == 0
    named = [(TensorSpec("state", [2, "batch", 128], "float32"), 1)]
    assert output_axis(np.zeros((2, 2, 128)), 2, TensorSpec("stateN", ["d0", "batch", "d2"], "f"), named) == 1
    assert output_axis(np.zeros(()), 3) is None


def test_per_layer_on_quantized_silero_batches_along_each_inputs_axis(vad_dynamic, vad_npz):
    from toolkit.data import load_data
    from toolkit.validate.per_layer import per_layer_error

    data = load_data(vad_npz)
    # Dynamic int8 picks its activation ranges per run, so the figures depend on the batch;
    # what must hold is that every batch runs (state cut on axis 1, sr whole) and all count.
    small = per_layer_error(vad_dynamic, _silero(), data, batch_size=3)
    whole = per_layer_error(vad_dynamic, _silero(), data, batch_size=64)
    assert small.samples == whole.samples == CHUNKS
    assert small.matched_tensors == whole.matched_tensors >= 1
    assert [a.node for a in small.layers] == [b.node for b in whole.layers]
    assert all(np.isfinite(layer.sqnr_db) for layer in small.layers + whole.layers)


def test_bench_on_localhost_with_an_npz(run_cli, vad_npz):
    result = run_cli("--json", "bench", _silero(), "--device", "localhost", "--runs", "5", "--warmup", "1",
                     "--data", vad_npz)
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["complete"] is True and record["batch"] == 1 and record["runs"] == 5
    assert record["latency_ms"]["p50"] > 0


def test_run_on_device_matches_the_host_across_batches():
    from toolkit.devices import run_on_device
    from toolkit.runtime import open_model

    feeds = _feeds(300, seed=1)  # the runner predicts in batches of 256: two batches, the second short
    host = open_model(_silero()).run(feeds)
    device = run_on_device(_silero(), feeds, "localhost")
    assert [d.shape for d in device] == [(300, 1), (2, 300, 128)]
    for expected, actual in zip(host, device, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_validate_on_localhost_with_an_npz(run_cli, vad_npz, vad_dynamic):
    same = run_cli("validate", _silero(), "-r", _silero(), "-d", vad_npz, "--device", "localhost")
    assert same.exit_code == 0, same.stderr
    assert f"({CHUNKS} examples)" in same.stdout + same.stderr
    quantized = run_cli("validate", vad_dynamic, "-r", _silero(), "-d", vad_npz, "--device", "localhost")
    assert quantized.exit_code in (0, 1), quantized.stderr  # int8 may fail the gates; it must run
    assert "stateN" in quantized.stdout + quantized.stderr


def test_auto_on_silero_runs_and_prints_its_table(run_cli, vad_npz, tmp_path):
    result = run_cli("quantize", _silero(), "--mode", "auto", "--data", vad_npz, "--max-drop", "1.0",
                     "-o", tmp_path / "auto")
    text = result.stdout + result.stderr
    assert result.exit_code in (0, 1), text
    assert "mode" in text and "agreement" in text and "dynamic-int8" in text
    assert ("nothing passed" in text) == (result.exit_code == 1)  # an honest "nothing passed" is fine
