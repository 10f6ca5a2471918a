"""`edgeward run --executor ray`: the same artifacts as the serial executor, reuse across
executors, progress for the whole run, and a task whose worker dies mid-step is retried.

Every Ray run here starts a local cluster (2 CPUs, loopback, no dashboard) and runs each
step in a supervised child, on the real runtimes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from toolkit.pipeline import run  # noqa: E402
from toolkit.pipeline.recipe import load_recipe  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    # Ray binds its servers to the machine's own address, not loopback: the suite runs them only in a
    # loopback-only network namespace (scripts/test makes one), so no test traffic leaves 127.0.0.1.
    pytest.mark.skipif(os.environ.get("EDGEWARD_TEST_LOOPBACK_ONLY") != "1",
                       reason="Ray tests run in a loopback-only network namespace: use scripts/test"),
]

# the demo's stages on one format and one quantize mode, to keep CI time down
SMALL_RECIPE = {
    "name": "ray-small",
    "source": "builtin:digits-cnn",
    "export": ["onnx"],
    "quantize": {"modes": ["dynamic-int8"]},
    "validate": {"data": "builtin:digits:test", "max_drop": 2.0, "min_agreement": 0.97},
    "bench": {"estimate": ["raspberry-pi-5"]},
}
# a manifest records its parent's manifest hash, and every manifest records when it was written
VOLATILE = {"created", "measured_at", "manifest_sha256", "seconds", "duration_s", "elapsed_s", "wall_s", "started", "finished"}


def recipe(tmp_path: Path, data: dict = SMALL_RECIPE):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def normalized(path: Path, root: Path):
    """A JSON file with its run folder written as ROOT and timestamps and durations dropped."""
    data = json.loads(path.read_text().replace(str(root), "ROOT"))

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(data)


def artifact_files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".json", ".onnx", ".tflite")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The small recipe run serially, then on Ray into another folder."""
    tmp = tmp_path_factory.mktemp("ray")
    serial = run(recipe(tmp), tmp / "serial")
    events = []
    ray = run(recipe(tmp), tmp / "ray", executor="ray", progress=events.append)
    return serial, ray, events


def test_ray_run_matches_serial_manifest_by_manifest(runs):
    serial, ray, _ = runs
    assert [s["step"] for s in ray.steps] == [s["step"] for s in serial.steps]
    assert {s["status"] for s in ray.steps} == {"ran"}
    serial_files, ray_files = artifact_files(serial.out_dir), artifact_files(ray.out_dir)
    assert sorted(serial_files) == sorted(ray_files)
    assert any(name.endswith("manifest.json") for name in serial_files)
    for name, path in serial_files.items():
        if path.suffix == ".json":
            assert normalized(ray_files[name], ray.out_dir) == normalized(path, serial.out_dir), name
        else:  # the model files themselves, byte for byte
            assert ray_files[name].read_bytes() == path.read_bytes(), name
    # every figure of the summary table: size, accuracy, drop, estimates
    assert ray.rows == serial.rows
    accuracies = [row["accuracy"] for row in ray.rows]
    assert all(a is not None and a > 0.9 for a in accuracies)
    assert ray.report.is_file()


def test_ray_progress_counts_every_step(runs):
    _, ray, events = runs
    total = len(ray.steps)
    assert all(event.task == "run" and event.total == total for event in events)
    finished = [event for event in events if event.status.split(" (")[0].endswith(": ran")]
    assert len(finished) == total
    assert events[-1].completed == total and "failed 0" in events[-1].status
    assert max(int(e.status.rsplit("running ", 1)[1].split(",")[0]) for e in events) >= 2  # steps side by side


def test_ray_run_reuses_a_serial_run(runs, tmp_path):
    serial, _, _ = runs
    again = run(recipe(tmp_path), serial.out_dir, executor="ray")
    assert {s["status"] for s in again.steps} == {"reused"}
    assert again.rows == serial.rows


def test_killed_worker_is_retried_and_the_run_finishes(runs, tmp_path, monkeypatch):
    serial, _, _ = runs
    marker = tmp_path / "killed-once"
    # the worker that runs quantize kills itself a second into the step, once; Ray retries the task
    monkeypatch.setenv("EDGEWARD_TEST_KILL_WORKER", f"quantize-onnx-dynamic-int8:{marker}")
    result = run(recipe(tmp_path), tmp_path / "out", executor="ray")
    assert marker.is_file()  # the worker really was killed
    assert {s["status"] for s in result.steps} == {"ran"}
    for name in ("quantize-onnx-dynamic-int8/manifest.json", "quantize-onnx-dynamic-int8/step.json",
                 "validate-quantize-onnx-dynamic-int8/step.json"):
        assert normalized(result.out_dir / name, result.out_dir) == normalized(serial.out_dir / name, serial.out_dir)
    model = "quantize-onnx-dynamic-int8/model.onnx"
    assert (result.out_dir / model).read_bytes() == (serial.out_dir / model).read_bytes()
    assert result.rows == serial.rows


def test_run_help_names_the_executor_and_imports_no_ray(run_cli):
    result = run_cli("run", "--help")
    assert result.exit_code == 0 and "--executor" in result.stdout and "--address" in result.stdout
    code = ("import sys, contextlib, io; from toolkit.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['run', '--help'])\n"
            "    except SystemExit: pass\n"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_address_without_ray_executor_is_bad_input(run_cli, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(SMALL_RECIPE))
    result = run_cli("run", path, "--address", "127.0.0.1:6379")
    assert result.exit_code == 2 and "--executor ray" in result.stderr
