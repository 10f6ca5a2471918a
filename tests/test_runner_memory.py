"""Peak memory the runner reports is its own: /proc/self/status VmHWM, not ru_maxrss.

On Linux ru_maxrss survives exec, so a runner started by a process that once held 400 MB
reports 400 MB; VmHWM belongs to the new process image. The baseline (resident memory
before the runtime and model are loaded) is reported beside the peak.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.devices.transport import runner_path

PARENT_MB = 400

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="no /proc (not Linux)")


def _result(model, command: str, *extra) -> dict:
    completed = subprocess.run([sys.executable, str(runner_path()), command, "--model", str(model), *extra],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return next(line for line in lines if line.get("event") == "result")


@needs_proc
def test_peak_is_the_runners_own_not_the_parents(digits_cnn_tflite):
    held = np.ones(PARENT_MB * 2**20 // 8)  # touched: this process's resident peak is now >= 400 MB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > PARENT_MB
    record = _result(digits_cnn_tflite, "bench", "--runs", "5")
    del held
    assert record["peak_rss_source"] == "VmHWM"
    # Python + numpy + LiteRT + a 155 KB model: tens of MB, far below what the parent held
    assert 10 < record["peak_rss_mb"] < PARENT_MB / 2
    assert 5 < record["rss_before_load_mb"] < record["peak_rss_mb"]
    assert record["peak_over_baseline_mb"] == pytest.approx(record["peak_rss_mb"] - record["rss_before_load_mb"],
                                                            abs=0.02)
    assert record["peak_over_baseline_mb"] > 0  # the runtime and the model took memory of their own


@needs_proc
def test_predict_reports_the_same_figures(digits_cnn_onnx, tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.zeros((4, 1, 8, 8), np.float32))
    record = _result(digits_cnn_onnx, "predict", "--inputs", str(inputs), "--outputs", str(tmp_path / "out.npz"))
    assert record["peak_rss_source"] == "VmHWM" and record["peak_rss_mb"] > record["rss_before_load_mb"] > 5


def test_without_proc_it_falls_back_to_ru_maxrss(monkeypatch):
    """Where /proc is missing (macOS), ru_maxrss is what there is; the record says so."""
    import toolkit.devices.runner as runner

    monkeypatch.setattr(runner, "_read", lambda path: None)
    peak, source = runner.peak_rss()
    assert source == "ru_maxrss" and peak == pytest.approx(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rel=0.05)
    assert runner.proc_status_mb("VmRSS") is None
