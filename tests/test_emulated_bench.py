"""Timings from an emulated board are never device timings (issue 14, item 2).

A profile with `emulated: true` (what scripts/arm64-testbed writes) is served here by the
local transport, so the bench really runs; what is checked is how its timings are labelled
and that the break-even, the plan and the pipeline refuse to price them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

EMULATED_PROFILE = """\
extends: localhost
kind: board
description: an emulated test board (the local transport stands in for QEMU)
emulated: true
cpu_family: cortex-a76
"""


@pytest.fixture(scope="module")
def profiles_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("emulated-profiles")
    (folder / "emulated-board.yaml").write_text(EMULATED_PROFILE)
    return folder


@pytest.fixture(scope="module")
def emulated_bench(tmp_path_factory, profiles_dir, digits_cnn_onnx) -> Path:
    """A real bench JSON written by `edgeward bench` on the emulated profile."""
    from toolkit.cli import main

    path = tmp_path_factory.mktemp("emulated-bench") / "bench.json"
    code = main(["bench", str(digits_cnn_onnx), "--device", "emulated-board", "--profiles", str(profiles_dir),
                 "--runs", "5", "--warmup", "1", "-o", str(path)])
    assert code == 0
    return path


def test_bench_labels_emulated_timings(run_cli, profiles_dir, digits_cnn_onnx):
    result = run_cli("bench", digits_cnn_onnx, "--device", "emulated-board", "--profiles", profiles_dir,
                     "--runs", "5", "--warmup", "1")
    assert result.exit_code == 0, result.stderr
    assert "EMULATED" in result.stdout and "emulated latency p50" in result.stdout
    assert "\nlatency p50" not in result.stdout
    as_json = run_cli("--json", "bench", digits_cnn_onnx, "--device", "emulated-board", "--profiles", profiles_dir,
                      "--runs", "5", "--warmup", "1")
    record = as_json.json()
    assert record["emulated"] is True and record["timing"] == "emulated"
    assert record["device"]["emulated"] is True and record["device"]["cpu_family"] == "cortex-a76"
    assert record["latency_ms"]["p50"] > 0  # measured, but labelled


def test_bench_on_a_real_profile_is_not_labelled(run_cli, digits_cnn_onnx):
    result = run_cli("--json", "bench", digits_cnn_onnx, "--runs", "3", "--warmup", "0")
    assert result.exit_code == 0, result.stderr
    record = result.json()
    assert "emulated" not in record and "emulated" not in record["device"]


def test_breakeven_refuses_an_emulated_bench(run_cli, emulated_bench, tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "t", "traffic": {"active_users": 10_000, "requests_per_user_per_day": 10},
        "cloud": {"price_per_request": 0.002}, "edge": {"engineering_hours": 200, "hourly_rate": 100},
        "router": {"on_device_share": 0.5}}))
    result = run_cli("breakeven", scenario, "--bench", emulated_bench, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "emulated board emulated-board" in result.stderr and "cannot be priced" in result.stderr
    assert not (tmp_path / "out").exists()


def test_plan_skips_an_emulated_bench_with_a_note(emulated_bench, digits_cnn_onnx):
    from toolkit.plan import build_plan
    from toolkit.plan.variants import variant_from_files

    variant = variant_from_files("cnn", digits_cnn_onnx, validation={"accuracy": 0.97, "reference_accuracy": 0.97},
                                 bench_jsons=[emulated_bench])
    assert variant.benches == {}  # the emulated timing is not kept as a measurement
    scenario = {"name": "t", "traffic": {"active_users": 2000, "requests_per_user_per_day": 2000},
                "cloud": {"price_per_request": 0.0015},
                "edge": {"engineering_hours": 320, "hourly_rate": 125, "devices": 2000, "hardware_per_device": 80},
                "router": {"on_device_share": 0.5}}
    plan = build_plan([variant], ["raspberry-pi-5"], scenario)
    assert any("timed under emulation" in note and "emulated-board" in note for note in plan.notes)
    assert {option.measured.how for option in plan.options} == {"estimate"}


def test_pipeline_refuses_to_price_an_emulated_bench(run_cli, profiles_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEWARD_PROFILES", str(profiles_dir))
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "t", "traffic": {"active_users": 10_000, "requests_per_user_per_day": 10},
        "cloud": {"price_per_request": 0.002}, "edge": {"engineering_hours": 200, "hourly_rate": 100}}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "source": "builtin:digits-cnn", "export": ["onnx"], "validate": {"data": "builtin:digits:test"},
        "bench": {"devices": ["emulated-board"]}, "breakeven": str(scenario)}))
    result = run_cli("run", recipe, "-o", tmp_path / "run")
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "emulated-board is an emulated board" in result.stderr
    assert not (tmp_path / "run" / "export-onnx").exists()  # refused before any step ran


def test_emulated_flag_survives_a_saved_record(emulated_bench):
    from toolkit.bench import is_emulated

    assert is_emulated(json.loads(emulated_bench.read_text()))
