"""Shared fixtures: an isolated cache and config, the CLI in-process, tiny real models."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_user_folders(tmp_path_factory):
    """Cache and config in temp folders: the builtin models train once per test session."""
    cache = tmp_path_factory.mktemp("cache")
    config = tmp_path_factory.mktemp("config")
    os.environ["EDGEWARD_CACHE"] = str(cache)
    os.environ["EDGEWARD_CONFIG"] = str(config)
    yield


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        import json

        return json.loads(self.stdout)


@pytest.fixture
def run_cli(capfd):
    """Run `edgeward ARGS...` in this process; returns exit code, stdout and stderr."""
    from toolkit.cli import main

    def run(*args) -> CliResult:
        capfd.readouterr()
        code = main([str(a) for a in args])
        out, err = capfd.readouterr()
        return CliResult(code, out, err)

    return run


def edgeward_process(*args, timeout=600, **kwargs) -> CliResult:
    """Run `edgeward ARGS...` as a separate process (for isolation, crashes, signals)."""
    completed = subprocess.run(
        [sys.executable, "-m", "toolkit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kwargs.pop("cwd", ROOT),
        **kwargs,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture(scope="session")
def digits_cnn():
    from toolkit.models.digits import load_builtin

    return load_builtin("digits-cnn")


@pytest.fixture(scope="session")
def digits_test():
    from toolkit.data import load_data

    return load_data("builtin:digits:test")


@pytest.fixture(scope="session")
def digits_cnn_onnx(tmp_path_factory, digits_cnn) -> Path:
    """The builtin CNN as a float ONNX file (dynamic batch), exported with torch directly."""
    import torch

    path = tmp_path_factory.mktemp("onnx") / "digits-cnn.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        digits_cnn,
        (torch.zeros(2, 1, 8, 8),),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    return path


@pytest.fixture(scope="session")
def digits_cnn_tflite(tmp_path_factory, digits_cnn) -> Path:
    """The builtin CNN as a float TFLite file (batch 1), converted with litert-torch directly."""
    import litert_torch
    import torch

    path = tmp_path_factory.mktemp("tflite") / "digits-cnn.tflite"
    litert_torch.convert(digits_cnn, (torch.zeros(1, 1, 8, 8),)).export(str(path))
    return path
