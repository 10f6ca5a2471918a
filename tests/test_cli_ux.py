"""Rough edges a new user hits on the command line: one `error:` line and the right exit code
for typical mistakes, only JSON on stdout with --json, units on every figure."""

from __future__ import annotations

import json
import re

import numpy as np
import yaml

from tests.conftest import edgeward_process


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_npz_that_is_not_an_archive_is_bad_input(run_cli, digits_cnn_onnx, tmp_path):
    """An .npy saved under .npz raised TypeError; a text file spoke of pickles."""
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as handle:
        np.save(handle, np.zeros((3, 1, 8, 8), np.float32))
    text = tmp_path / "garbage.npz"
    text.write_text("garbage\n")
    for data in (npy, text):
        result = run_cli("quantize", digits_cnn_onnx, "--mode", "static-int8", "--calibration", data,
                         "-o", tmp_path / "out")
        assert result.exit_code == 2
        assert "not an .npz archive" in one_error_line(result)
        assert not (tmp_path / "out").exists()


def test_bench_wrong_or_corrupt_model_is_bad_input(run_cli, tmp_path):
    """Corrupt files were exit 3 ("the device's runtime cannot load the model")."""
    (tmp_path / "garbage.onnx").write_text("garbage")
    (tmp_path / "empty.tflite").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    for model, words in (("garbage.onnx", "not a readable ONNX model"), ("empty.tflite", "the file is empty"),
                         ("notes.txt", "bench takes an .onnx or .tflite model")):
        for extra in ((), ("--estimate", "--device", "raspberry-pi-5")):
            result = run_cli("bench", tmp_path / model, *extra)
            assert result.exit_code == 2, (model, extra, result.stderr)
            assert words in one_error_line(result)
    result = run_cli("bench", "builtin:digits-cnn")
    assert result.exit_code == 2 and "edgeward export builtin:digits-cnn" in one_error_line(result)


def test_bench_prints_a_unit_on_every_latency(run_cli, digits_cnn_onnx):
    result = run_cli("bench", digits_cnn_onnx, "--runs", "3", "--warmup", "0")
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("latency"))
    for label in ("p50", "p90", "p99", "mean"):
        assert re.search(rf"{label} [0-9.]+ (µs|ms)", line), line


def test_breakeven_runaway_growth_is_bad_input(run_cli, tmp_path):
    """400% a month overflowed the cents rounding: `unexpected InvalidOperation`."""
    scenario = yaml.safe_load(run_cli("breakeven", "--example").stdout)
    scenario["traffic"]["monthly_growth"] = "400%"
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    result = run_cli("breakeven", path, "-o", tmp_path / "report")
    assert result.exit_code == 2
    assert "monthly_growth" in one_error_line(result)
    assert not (tmp_path / "report").exists()


def test_breakeven_example_with_json_is_json(run_cli):
    for args in (("--json", "breakeven", "--example"), ("breakeven", "--example", "--json")):
        result = run_cli(*args)
        assert result.exit_code == 0
        assert "router:" in json.loads(result.stdout)["example"]


def test_devices_help_has_examples_and_check_reads_plainly(run_cli):
    for sub in ("list", "show", "check"):
        result = run_cli("devices", sub, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout, sub
    check = run_cli("devices", "check", "localhost")
    assert check.exit_code == 0, check.stderr
    assert "None" not in check.stdout and "{'" not in check.stdout and "True" not in check.stdout


def test_quantize_exclude_of_no_node_warns(run_cli, digits_cnn_onnx, tmp_path):
    result = run_cli("quantize", digits_cnn_onnx, "--mode", "dynamic-int8", "--exclude", "no_such_node",
                     "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "warning: --exclude no_such_node: no node of that name" in result.stderr


def test_tflite_delegate_log_is_not_printed(digits_cnn_tflite):
    """LiteRT's `INFO: Created TensorFlow Lite XNNPACK delegate` is shown only with -v."""
    args = ("validate", digits_cnn_tflite, "--reference", digits_cnn_tflite, "--data", "builtin:digits:test",
            "--no-record")
    quiet = edgeward_process(*args, timeout=120)
    assert quiet.exit_code == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr
    chatty = edgeward_process("-v", *args, timeout=120)
    assert "XNNPACK" in chatty.stderr


def test_validate_on_a_device_from_a_profiles_folder(run_cli, tmp_path, digits_cnn_onnx, monkeypatch):
    monkeypatch.setenv("EDGEWARD_PROFILES", "")  # restored after the test, whatever the command sets
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "bench-host.yaml").write_text("extends: localhost\ndescription: this host under another name\n")
    unknown = run_cli("validate", digits_cnn_onnx, "--reference", digits_cnn_onnx, "--data", "builtin:digits:test",
                      "--device", "bench-host")
    assert unknown.exit_code == 2 and "bench-host" in unknown.stderr
    result = run_cli("--json", "validate", digits_cnn_onnx, "--reference", digits_cnn_onnx,
                     "--data", "builtin:digits:test", "--device", "bench-host", "--profiles", profiles)
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["device"] == "bench-host"
    assert report["outputs"][0]["agreement"] == 1.0


def test_quantize_takes_relative_paths(run_cli, tmp_path, digits_cnn_onnx, monkeypatch):
    """The quantizers run from a scratch folder; relative paths must be resolved before that."""
    import shutil

    shutil.copy(digits_cnn_onnx, tmp_path / "float.onnx")
    monkeypatch.chdir(tmp_path)
    for mode in ("dynamic-int8", "static-int8", "fp16"):
        result = run_cli("quantize", "float.onnx", "--mode", mode, "--calibration", "builtin:digits:train",
                         "-o", f"out-{mode}")
        assert result.exit_code == 0, result.stderr
        assert (tmp_path / f"out-{mode}" / "model.onnx").is_file()
    assert not list(tmp_path.glob("*.data"))


def test_library_warnings_and_log_lines_read_as_before(run_cli, digits_cnn_onnx, tmp_path):
    """The library warns (EdgewardWarning) and logs; the CLI prints them as `warning: ...` and plain
    lines (DEBUG ones only with -v), every time, and leaves logging and warnings as it found them."""
    import logging
    import warnings

    showwarning = warnings.showwarning
    for run in (1, 2):  # a warning from the same line is shown again, not once per process
        result = run_cli("quantize", digits_cnn_onnx, "--mode", "dynamic-int8", "--calibration",
                         "builtin:digits:train", "-o", tmp_path / f"int8-{run}")
        assert result.exit_code == 0, result.stderr
        assert result.stderr.splitlines() == ["warning: dynamic-int8 does not use calibration data; ignoring it"]
    quiet = run_cli("export", digits_cnn_onnx, "--to", "onnx", "-o", tmp_path / "quiet")
    chatty = run_cli("-v", "export", digits_cnn_onnx, "--to", "onnx", "-o", tmp_path / "chatty")
    assert quiet.exit_code == 0 and chatty.exit_code == 0, chatty.stderr
    assert "exporting" not in quiet.stderr
    assert f"exporting {digits_cnn_onnx} (onnx) to onnx ..." in chatty.stderr.splitlines()
    assert logging.getLogger("toolkit").handlers == [] and warnings.showwarning is showwarning
