"""Estimates that learn: a measured bench calibrates the device's roofline estimate, and the
estimate says whether it is calibrated and by how many runs (issue 14, item 7)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def own_config(tmp_path, monkeypatch):
    """A config folder of this test's own, so calibration points from other tests do not count."""
    monkeypatch.setenv("EDGEWARD_CONFIG", str(tmp_path / "config"))
    return tmp_path / "config"


def test_fit_recovers_the_factors_of_exact_points():
    from toolkit.bench.calibration import fit

    points = [{"roofline_ms": r, "nodes": n, "measured_ms": 2.0 * r + 0.01 * n}
              for r, n in ((0.1, 10), (1.0, 40), (5.0, 100))]
    factors = fit(points)
    assert factors["k"] == pytest.approx(2.0, rel=1e-6)
    assert factors["c_ms_per_node"] == pytest.approx(0.01, rel=1e-6)
    assert factors["max_rel_error_in_fit"] < 1e-6


def test_a_measured_bench_calibrates_the_estimate(run_cli, own_config, tmp_path, digits_cnn_onnx):
    before = run_cli("--json", "bench", digits_cnn_onnx, "--estimate").json()
    assert before["calibration"]["calibrated"] is False and before["calibration"]["runs"] == 0
    roofline_ms = before["latency"]["latency_ms"]
    assert before["latency_ms"]["p50"] == roofline_ms

    skipped = run_cli("bench", digits_cnn_onnx, "--runs", 20, "--no-calibrate")
    assert skipped.exit_code == 0 and not (own_config / "calibration" / "localhost.json").exists()

    out = tmp_path / "bench.json"
    measured = run_cli("bench", digits_cnn_onnx, "--runs", 100, "--warmup", 10, "--threads", 1, "-o", out)
    assert measured.exit_code == 0, measured.stderr
    record = json.loads(out.read_text())
    assert record["calibration"]["recorded"] is True and record["calibration"]["device_runs"] == 1
    stored = json.loads((own_config / "calibration" / "localhost.json").read_text())["runs"]
    assert stored[0]["measured_ms"] == record["latency_ms"]["p50"] and stored[0]["format"] == "onnx"
    assert stored[0]["precision"] == "fp32" and stored[0]["roofline_ms"] == pytest.approx(roofline_ms)

    after = run_cli("--json", "bench", digits_cnn_onnx, "--estimate").json()
    calibration = after["calibration"]
    assert calibration["calibrated"] is True and calibration["runs"] == 1 and calibration["models"] == 1
    ratio = after["latency_ms"]["p50"] / record["latency_ms"]["p50"]
    assert 0.7 <= ratio <= 1.3, ratio  # the goal: within ±30% of measured
    text = run_cli("bench", digits_cnn_onnx, "--estimate").stdout
    assert "CALIBRATED" in text and "from 1 measured runs of 1 models" in text


def test_an_unreadable_calibration_file_is_ignored(run_cli, own_config, digits_cnn_onnx):
    (own_config / "calibration").mkdir(parents=True)
    (own_config / "calibration" / "localhost.json").write_text("{not json")
    result = run_cli("--json", "bench", digits_cnn_onnx, "--estimate")
    assert result.exit_code == 0 and result.json()["calibration"]["calibrated"] is False
