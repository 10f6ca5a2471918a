"""A device lab on Ray: at most one step per physical device at a time, devices in parallel,
and a device that drops fails only its own steps (exit 4 in their records).

Two private ssh test beds (real sshd on 127.0.0.1, each its own port and keys) play two
boards, `lab-a` and `lab-b`. Every step records when it started and finished on its Ray worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from toolkit.pipeline import run  # noqa: E402
from toolkit.pipeline.executors import StepsFailed, device_resource  # noqa: E402
from toolkit.pipeline.recipe import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ("lab-a", "lab-b")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("EDGEWARD_TEST_LOOPBACK_ONLY") != "1",
                       reason="Ray tests run in a loopback-only network namespace: use scripts/test"),
    pytest.mark.skipif(shutil.which("ssh") is None or not Path("/usr/sbin/sshd").exists(),
                       reason="the ssh test beds need OpenSSH (client and sshd)"),
]

LAB_RECIPE = {
    "name": "device-lab",
    "source": "builtin:digits-cnn",
    "export": ["onnx"],
    "quantize": {"modes": ["dynamic-int8", "fp16"]},  # three models, each benched on both boards
    "bench": {"devices": list(DEVICES), "runs": 30},
}


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """Two ssh test beds, their profiles as lab-a and lab-b; stopped afterwards."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    beds = {}
    try:
        for name in DEVICES:
            state = tmp_path / f"bed-{name}"
            env = {**os.environ, "EDGEWARD_TESTBED_DIR": str(state), "EDGEWARD_TESTBED_NO_USER_PROFILE": "1"}
            subprocess.run([str(ROOT / "scripts" / "ssh-testbed"), "start"], env=env, check=True, capture_output=True)
            beds[name] = (state, env)
            shutil.copy(state / "profiles" / "ssh-testbed.yaml", profiles / f"{name}.yaml")
        monkeypatch.setenv("EDGEWARD_PROFILES", str(profiles))  # set before Ray starts: its workers inherit it
        yield beds
    finally:
        for _state, env in beds.values():
            subprocess.run([str(ROOT / "scripts" / "ssh-testbed"), "stop"], env=env, capture_output=True)


def recipe(tmp_path: Path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(LAB_RECIPE))
    return load_recipe(path)


def bench_records(records: list[dict], device: str) -> list[dict]:
    return [record for record in records if record["step"].startswith("bench-") and record["step"].endswith(device)]


def overlaps(first: dict, second: dict) -> bool:
    return first["started"] < second["finished"] and second["started"] < first["finished"]


def test_one_step_per_device_at_a_time_and_devices_in_parallel(lab, tmp_path):
    from toolkit.pipeline import plan

    steps = plan(recipe(tmp_path), tmp_path / "plan")
    ports = {name: (state / "port").read_text().strip() for name, (state, _env) in lab.items()}
    resources = {step.name: device_resource(step) for step in steps if step.stage == "bench"}
    assert sorted(set(resources.values())) == sorted(f"device:127.0.0.1:{port}" for port in ports.values())

    result = run(recipe(tmp_path), tmp_path / "run", executor="ray")
    by_device = {device: bench_records(result.steps, device) for device in DEVICES}
    for device, records in by_device.items():
        assert len(records) == 3 and all(record["status"] == "ran" for record in records), records
        ordered = sorted(records, key=lambda record: record["started"])
        for before, after in zip(ordered, ordered[1:]):
            assert before["finished"] <= after["started"], f"two steps shared {device}: {before} {after}"
    # the boards are two: some step on lab-a ran while one on lab-b did
    assert any(overlaps(a, b) for a in by_device["lab-a"] for b in by_device["lab-b"]), by_device
    assert all(row["p50_ms"] > 0 for row in result.rows)  # measured on a board


def test_a_board_that_drops_fails_only_its_own_steps(lab, tmp_path):
    state_b, _env = lab["lab-b"]
    out = tmp_path / "run"
    first_on_b = []

    def kill_b_after_its_first_step():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not first_on_b:
            first_on_b.extend((out / "bench").glob("*-lab-b/step.json") if (out / "bench").is_dir() else [])
            time.sleep(0.05)
        if first_on_b:
            os.kill(int((state_b / "sshd.pid").read_text()), signal.SIGTERM)

    killer = threading.Thread(target=kill_b_after_its_first_step, daemon=True)
    killer.start()
    with pytest.raises(StepsFailed) as raised:
        run(recipe(tmp_path), out, executor="ray")
    killer.join(timeout=5)
    assert first_on_b, "no step on lab-b finished before the run ended"
    failure = raised.value
    assert failure.exit_code == 4 and "lab-b" in str(failure)
    on_a, on_b = bench_records(failure.records, "lab-a"), bench_records(failure.records, "lab-b")
    assert len(on_a) == 3 and all(record["status"] == "ran" for record in on_a), on_a
    assert any(record["status"] == "ran" for record in on_b), on_b
    dropped = [record for record in on_b if record["status"] == "failed"]
    assert dropped and all(record["exit_code"] == 4 and record["error"] for record in dropped), on_b
    index = (out / "index.html").read_text()  # the run's report is still written, naming the failed steps
    assert all(record["step"] in index for record in dropped) and "failed" in index
