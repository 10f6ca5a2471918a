"""Crash consistency: SIGKILL at random moments of export, quantize, report writing and a
staged-folder writer leaves every final path with the complete old or new content."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import fuzz_kill  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_loop_leaves_old_or_new_never_partial(tmp_path, digits_cnn_onnx):
    from toolkit.costs.example import EXAMPLE

    (tmp_path / "scenario.yaml").write_text(EXAMPLE)
    seeds = {"onnx": [{"path": str(digits_cnn_onnx), "role": "digits"}],
             "yaml": [{"path": str(tmp_path / "scenario.yaml"), "role": "scenario"}]}
    figures = fuzz_kill.kill_loop(seeds, tmp_path / "kill", kills=8, staged_kills=30, seed=5,
                                  only=("export", "quantize", "breakeven"))
    assert figures["problems"] == [] and figures["corrupted"] == 0
    assert figures["leftover_staging"] == 0, figures["leftovers"]
    assert figures["injections"] >= 20  # most kills land while the writer is running
    assert figures["by_target"].get("staged-writer", 0) >= 20


def test_the_checker_sees_a_partial_artifact(tmp_path):
    from toolkit.artifacts import new_manifest, staged_folder, write_manifest

    out = tmp_path / "a"
    with staged_folder(out) as stage:
        (stage / "model.onnx").write_bytes(b"1234" * 1000)
        write_manifest(stage, new_manifest("t", stage, source={}, options={}))
    assert fuzz_kill.check_artifact(out) is None
    (out / "model.onnx").write_bytes(b"1234" * 500)  # what a truncating writer would leave
    assert "sha256" in fuzz_kill.check_artifact(out)
    (out / "manifest.json").write_text('{"files": ')
    assert "manifest unreadable" in fuzz_kill.check_artifact(out)
