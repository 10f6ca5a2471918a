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


def test_the_host_has_a_cpu_family_that_profiles_on_it_share(tmp_path):
    """localhost, and a profile that takes its CPU from this host (as the ssh test bed on loopback
    does), are of the host's family; a board says its own; a profile that says nothing has none."""
    from toolkit.bench.calibration import cpu_family_of, host_cpu_family
    from toolkit.common.cpu import host_cpu_flags
    from toolkit.devices import get_profile

    family = host_cpu_family()
    flags = host_cpu_flags()
    if "avx2" in flags:
        assert family.startswith("x86-64-avx2") or family.startswith("x86-64-avx512")
    (tmp_path / "loopback-box.yaml").write_text("extends: localhost\ndescription: this host over another transport\n")
    (tmp_path / "a76-board.yaml").write_text("extends: localhost\ndescription: a board\ncpu_family: cortex-a76\n"
                                             "cpu: {value: 4x Cortex-A76, source: its data sheet}\n")
    assert cpu_family_of(get_profile("localhost")) == family
    assert cpu_family_of(get_profile("loopback-box", tmp_path)) == family
    assert cpu_family_of(get_profile("a76-board", tmp_path)) == "cortex-a76"
    assert cpu_family_of(get_profile("raspberry-pi-5")) is None


def test_int8_without_dot_product_instructions_is_not_priced_at_the_int8_peak():
    from toolkit.bench.calibration import fit_model, has_int8_dot, predict

    assert has_int8_dot("x86-64-avx512-vnni") and has_int8_dot("cortex-a76") and not has_int8_dot("x86-64-avx2")
    assert not has_int8_dot("cortex-a53")
    # the same work, roofline at a 2x int8 peak: half the fp32 roofline
    fp32 = {"format": "onnx", "precision": "fp32", "roofline_ms": 1.0, "by_class": {"conv": 1.0},
            "dispatched_nodes": 0, "peak_gops": 100.0}
    int8 = {**fp32, "precision": "int8", "roofline_ms": 0.5, "by_class": {"conv": 0.5}}
    plain, dot = fit_model([], int8_dot=False), fit_model([], int8_dot=True)
    without_dot = predict(plain, int8) / predict(plain, fp32)
    with_dot = predict(dot, int8) / predict(dot, fp32)
    assert 0.9 <= without_dot <= 1.1  # about float speed, not 2x (let alone 4x) faster
    assert with_dot < 0.75 * without_dot


def test_the_fit_learns_the_factors_the_runs_inform():
    """Points made by known factors: the fit lands near them, and a model left out is predicted well."""
    from toolkit.bench.calibration import fit_model, predict

    truth = {"conv": 3.0, "matmul": 2.0, "elementwise": 3.5, "other": 2.5}
    points = []
    for index, (conv, matmul, elementwise, memory, nodes) in enumerate(
            [(1.0, 0.1, 0.05, 0.3, 20), (0.1, 2.0, 0.2, 1.0, 200), (0.5, 0.5, 0.5, 0.5, 80), (3.0, 0.0, 0.3, 0.6, 60),
             (0.0, 5.0, 0.6, 2.0, 400), (0.02, 0.01, 0.01, 0.01, 10)]):
        point = {"format": "onnx", "precision": "fp32", "peak_gops": 100.0, "dispatched_nodes": nodes,
                 "compute_by_class": {"conv": conv, "matmul": matmul, "elementwise": elementwise, "other": 0.0},
                 "memory_ms": memory, "model_sha256": str(index)}
        point["measured_ms"] = (sum(truth[c] * ms for c, ms in point["compute_by_class"].items()) + 0.3 * memory
                                + 0.004 * nodes + 0.02)
        points.append(point)
    for left_out in points:
        params = fit_model([p for p in points if p is not left_out])
        assert predict(params, left_out) / left_out["measured_ms"] == pytest.approx(1.0, abs=0.15)


@pytest.mark.slow
def test_a_device_of_the_same_family_learns_from_the_host(run_cli, own_config, tmp_path, digits_cnn_onnx,
                                                          digits_cnn_tflite):
    """A measured bench on localhost calibrates a device of the host's CPU family (and says so); a
    device of another family stays uncalibrated; a device's own runs come first."""
    from toolkit.bench.calibration import host_cpu_family

    family = host_cpu_family()
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "same-family-box.yaml").write_text(
        "extends: localhost\ndescription: another box of this host's family\n"
        f"cpu_family: {family}\ncpu: {{value: another box, source: its data sheet}}\n")
    (profiles / "other-family-box.yaml").write_text(
        "extends: localhost\ndescription: a box of another family\n"
        "cpu_family: cortex-a53\ncpu: {value: 4x Cortex-A53, source: its data sheet}\n")
    for model in (digits_cnn_onnx, digits_cnn_tflite):
        measured = run_cli("bench", model, "--runs", 60, "--warmup", 10, "--threads", 1)
        assert measured.exit_code == 0, measured.stderr
    stored = json.loads((own_config / "calibration" / "localhost.json").read_text())["runs"]
    assert {run["cpu_family"] for run in stored} == {family} and all(run["by_class"] for run in stored)

    shared = run_cli("--json", "bench", digits_cnn_onnx, "--estimate", "--device", "same-family-box",
                     "--profiles", profiles).json()["calibration"]
    assert shared["calibrated"] is True and shared["source"] == ["localhost"] and shared["cpu_family"] == family
    assert shared["runs"] == 1 and shared["scope"] == "this model's own runs"
    text = run_cli("bench", digits_cnn_onnx, "--estimate", "--device", "same-family-box", "--profiles", profiles).stdout
    assert f"on localhost, same family {family}" in text

    other = run_cli("--json", "bench", digits_cnn_onnx, "--estimate", "--device", "other-family-box",
                    "--profiles", profiles).json()["calibration"]
    assert other["calibrated"] is False and "cortex-a53" in other["why"]

    own = run_cli("bench", digits_cnn_tflite, "--device", "same-family-box", "--profiles", profiles,
                  "--runs", 30, "--threads", 1)
    assert own.exit_code == 0, own.stderr
    mine = run_cli("--json", "bench", digits_cnn_onnx, "--estimate", "--device", "same-family-box",
                   "--profiles", profiles).json()["calibration"]
    assert mine["source"] == ["same-family-box"] and mine["models"] == 1 and "fit over 1 models" in mine["scope"]
