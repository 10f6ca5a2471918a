"""`edgeward quantize --mode auto --workers N`: each try's validation is sharded across worker
processes, and the search makes the same choice on the same figures as one process.

Accuracy, drop and agreement are counts, identical to the last digit; SQNR is a sum, equal
up to summation order (see toolkit.validate.shards)."""

from __future__ import annotations

import json
import os

import pytest

EXACT = ("label", "folder", "size_bytes", "accuracy", "drop", "agreement", "passed", "smaller", "error")


def _auto(run_cli, model, out, *extra):
    result = run_cli("--json", "quantize", model, "--mode", "auto", "--data", "builtin:digits:test",
                     "--calibration", "builtin:digits:train", "-o", out, *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "tries.json").read_text()), result.stderr


def test_auto_with_two_workers_matches_one(digits_cnn_onnx, run_cli, tmp_path):
    whole, one_log = _auto(run_cli, digits_cnn_onnx, tmp_path / "one")
    sharded, two_log = _auto(run_cli, digits_cnn_onnx, tmp_path / "two", "--workers", "2")
    # the tries really were sharded: every judged try's validation ran in two worker processes
    judged = [row for row in sharded["tries"] if not row["error"]]
    assert two_log.count("examples in 2 shards (local)") == len(judged) >= 2
    assert "shards" not in one_log

    assert sharded["chosen"] == whole["chosen"] and sharded["passed"] == whole["passed"]
    assert sharded["reference_accuracy"] == whole["reference_accuracy"]
    assert len(sharded["tries"]) == len(whole["tries"]) >= 2
    for got, want in zip(sharded["tries"], whole["tries"], strict=True):
        for key in EXACT:
            assert got[key] == want[key], (want["label"], key, got[key], want[key])
        if want["sqnr_db"] is not None:
            assert got["sqnr_db"] == pytest.approx(want["sqnr_db"], rel=1e-6)


def test_sharding_options_only_for_auto(digits_cnn_onnx, run_cli, tmp_path):
    result = run_cli("quantize", digits_cnn_onnx, "--mode", "dynamic-int8", "--workers", "2", "-o", tmp_path / "q")
    assert result.exit_code == 2
    assert "--mode auto" in result.stderr
    result = run_cli("quantize", digits_cnn_onnx, "--mode", "auto", "--data", "builtin:digits:test",
                     "--workers", "0", "-o", tmp_path / "a")
    assert result.exit_code == 2
    assert "--workers 0" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EDGEWARD_TEST_LOOPBACK_ONLY") != "1",
                    reason="Ray tests run in a loopback-only network namespace: use scripts/test")
def test_auto_on_ray_matches_one_process(digits_cnn_onnx, run_cli, tmp_path):
    pytest.importorskip("ray")
    whole, _ = _auto(run_cli, digits_cnn_onnx, tmp_path / "one")
    on_ray, log = _auto(run_cli, digits_cnn_onnx, tmp_path / "ray", "--workers", "2", "--executor", "ray")
    judged = [row for row in on_ray["tries"] if not row["error"]]
    assert log.count("examples in 2 shards (ray)") == len(judged) >= 2
    assert on_ray["chosen"] == whole["chosen"]
    for got, want in zip(on_ray["tries"], whole["tries"], strict=True):
        for key in EXACT:
            assert got[key] == want[key], (want["label"], key, got[key], want[key])
