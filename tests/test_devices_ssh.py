"""End to end over the ssh test bed (scripts/ssh-testbed start): a real sshd on 127.0.0.1
stands in for a board. Skipped, with the reason, when the test bed is not running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from processes import descendants

from tests.conftest import ROOT
from tests.testbed import PROFILES, STATE, boards_started

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.skipif(not boards_started("ssh-testbed"), reason=f"the ssh test bed is not running (scripts/ssh-testbed start; "
                                                   f"state {STATE})"),
]


@pytest.fixture
def profiles(monkeypatch):
    """Commands without --profiles (validate --device) find ssh-testbed through EDGEWARD_PROFILES."""
    monkeypatch.setenv("EDGEWARD_PROFILES", str(PROFILES))
    return PROFILES


def _variant(folder: Path, name: str, **transport) -> Path:
    """A profile like ssh-testbed with some transport fields changed."""
    import yaml

    data = yaml.safe_load((PROFILES / "ssh-testbed.yaml").read_text())
    data["transport"].update(transport)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_devices_check_over_ssh(run_cli, profiles):
    result = run_cli("--json", "devices", "check", "ssh-testbed")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["transport"] == "ssh" and report["ok"] is True and report["missing"] == []
    assert report["runtimes"]["onnxruntime"] and report["runtimes"]["ai_edge_litert"]
    assert report["ram_available_mb"] > 0 and report["disk_free_mb"] > 0 and report["cpu_count"] >= 1


@pytest.mark.parametrize("fixture", ["digits_cnn_onnx", "digits_cnn_tflite"])
def test_bench_over_ssh(run_cli, profiles, request, tmp_path, fixture):
    model = request.getfixturevalue(fixture)
    out = tmp_path / "bench.json"
    result = run_cli("--json", "bench", model, "--device", "ssh-testbed", "--runs", 100, "--warmup", 5, "-o", out)
    assert result.exit_code == 0, result.stderr
    record = json.loads(out.read_text())
    assert record == result.json()
    assert record["complete"] is True and record["runs"] == 100 and record["transport"]["type"] == "ssh"
    latency = record["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert record["model"]["sha256"] and record["device"]["power_w"]["typical"]["value"] > 0
    assert record["delegate"] == ("CPUExecutionProvider" if fixture.endswith("onnx") else "XNNPACK delegate")
    assert record["peak_rss_mb"] > 10


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["digits_cnn_onnx", "digits_cnn_tflite"])
def test_validate_on_the_board(run_cli, profiles, request, tmp_path, fixture):
    model = request.getfixturevalue(fixture)
    result = run_cli("--json", "validate", model, "--reference", "builtin:digits-cnn", "--data",
                     "builtin:digits:test", "--device", "ssh-testbed", "-o", tmp_path / "report")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["device"] == "ssh-testbed" and report["passed"] is True and report["samples"] == 450
    output = report["outputs"][0]
    assert output["candidate_accuracy"] > 0.95 and output["drop"] == 0.0  # on held data, on the "board"
    assert output["max_abs_error"] < 1e-3 and output["agreement"] == 1.0


def test_run_on_device_matches_local_outputs(profiles, digits_cnn_onnx, digits_test):
    import numpy as np

    from toolkit.devices import run_on_device
    from toolkit.runtime import open_model, run_batched

    remote = run_on_device(digits_cnn_onnx, digits_test.inputs, "ssh-testbed")
    local = run_batched(open_model(digits_cnn_onnx), digits_test.inputs)
    assert remote[0].shape == local[0].shape == (len(digits_test.labels), 10)
    np.testing.assert_allclose(remote[0], local[0], rtol=1e-5, atol=1e-5)
    accuracy = float((remote[0].argmax(1) == digits_test.labels).mean())
    assert accuracy > 0.95


@pytest.fixture(scope="module")
def compute_bound_models(tmp_path_factory) -> dict[str, Path]:
    """Two 3x3 convolutions, 64 channels on 32x32 (about 75 M multiply-adds, 0.3 MB of
    weights): milliseconds of work per inference, so what is compared is the inference and
    not the microsecond effects (cache placement, a neighbour's timer tick) that decide a
    20-microsecond digits run, where one side came out 30% faster than the other in CI."""
    import litert_torch
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(64, 64, 3, padding=1)).eval()
    example = (torch.randn(1, 64, 32, 32),)
    folder = tmp_path_factory.mktemp("compute-bound")
    onnx_path, tflite_path = folder / "convs.onnx", folder / "convs.tflite"
    torch.onnx.export(model, example, str(onnx_path), dynamo=True, external_data=False, input_names=["x"],
                      output_names=["y"], verbose=False)
    litert_torch.convert(model, example).export(str(tflite_path))
    return {"onnx": onnx_path, "tflite": tflite_path}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "tflite"])
def test_ssh_latency_within_15_percent_of_local(profiles, compute_bound_models, kind):
    """Same model, same runner, through ssh or a local process: the transport must not reach
    the per-inference figure. Rounds are interleaved so load from other work hits both sides
    alike, and each side's fastest inference over all rounds is compared: on a shared 2-core
    machine whole rounds are slowed by neighbours (in CI one side's p50s spread 1.64-2.11 ms
    between rounds of the same model, and the best p50s were 16% apart), while the fastest
    inference is the cost of the inference itself, which is what transport overhead would
    raise. Transport leaking into the figure can only make the board slower, so that side is
    held to 15%; the other bound only guards against a figure in the wrong unit."""
    from toolkit.devices import bench_on_device

    fastest = {"localhost": [], "ssh-testbed": []}
    p50 = {"localhost": [], "ssh-testbed": []}
    for _ in range(5):
        for device in fastest:
            record = bench_on_device(compute_bound_models[kind], device, runs=100, warmup=20, threads=1)
            fastest[device].append(record["latency_ms"]["min"])
            p50[device].append(record["latency_ms"]["p50"])
    local, remote = min(fastest["localhost"]), min(fastest["ssh-testbed"])
    assert local > 0.5, fastest  # the model does real work, or the comparison measures noise
    assert 0.7 < remote / local < 1.15, {"fastest": fastest, "p50": p50}


def test_unreachable_host_fails_within_the_connect_timeout(run_cli, tmp_path, digits_cnn_onnx):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound, never listening: connections are refused
        folder = _variant(tmp_path, "nowhere", port=closed_port, connect_timeout=3)
        started = time.monotonic()
        result = run_cli("bench", digits_cnn_onnx, "--device", "nowhere", "--profiles", folder)
    assert result.exit_code == 4 and "unreachable" in result.stderr
    assert time.monotonic() - started < 10


def test_unknown_and_changed_host_keys_are_refused_with_fingerprint(run_cli, tmp_path, digits_cnn_onnx):
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    folder = _variant(tmp_path / "p1", "unknown-key", known_hosts=str(empty))
    result = run_cli("bench", digits_cnn_onnx, "--device", "unknown-key", "--profiles", folder)
    assert result.exit_code == 4 and "host key refused" in result.stderr and "SHA256:" in result.stderr
    assert empty.read_text() == ""  # nothing was added

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    port = (STATE / "port").read_text().strip()
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{port} " + " ".join((other.with_suffix(".pub")).read_text().split()[:2]) + "\n")
    folder = _variant(tmp_path / "p2", "changed-key", known_hosts=str(wrong))
    result = run_cli("devices", "check", "changed-key", "--profiles", folder)
    assert result.exit_code == 4 and "CHANGED" in result.stderr and "SHA256:" in result.stderr


def test_runtime_missing_on_the_device_names_what_to_install(run_cli, tmp_path, digits_cnn_onnx):
    bare_python = shutil.which("python3", path="/usr/bin:/bin")
    folder = _variant(tmp_path, "bare-board", python=bare_python)
    result = run_cli("bench", digits_cnn_onnx, "--device", "bare-board", "--profiles", folder)
    assert result.exit_code == 4, result.stderr
    assert "runtime missing" in result.stderr and "pip install" in result.stderr
    check = run_cli("--json", "devices", "check", "bare-board", "--profiles", folder)
    assert check.exit_code == 4 and check.json()["ok"] is False


def test_model_path_with_spaces_quotes_and_command_substitution(run_cli, profiles, tmp_path, digits_cnn_onnx):
    canary = f"edgeward-canary-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "a b 'c' \"d\""
    folder.mkdir()
    model = folder / f"m $(touch {canary}) `touch {canary}`; touch {canary}.onnx"
    shutil.copyfile(digits_cnn_onnx, model)
    result = run_cli("--json", "bench", model, "--device", "ssh-testbed", "--runs", 20)
    assert result.exit_code == 0, result.stderr
    assert result.json()["complete"] is True
    for place in (Path.home(), Path("/tmp"), ROOT, tmp_path, folder, Path.cwd()):
        assert not (place / canary).exists()


def _is_runner(pid: int) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        return comm.startswith("python") and b"runner.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.slow
def test_ssh_server_killed_mid_run_gives_an_incomplete_result(tmp_path, digits_cnn_onnx, run_cli):
    """A private test bed whose sshd (listener and session processes) is killed while bench runs."""
    state = tmp_path / "testbed"
    env = {**os.environ, "EDGEWARD_TESTBED_DIR": str(state), "EDGEWARD_TESTBED_NO_USER_PROFILE": "1"}
    subprocess.run([str(ROOT / "scripts" / "ssh-testbed"), "start"], env=env, check=True, capture_output=True)
    try:
        out = tmp_path / "bench.json"
        bench = subprocess.Popen(
            [os.sys.executable, "-m", "toolkit", "bench", str(digits_cnn_onnx), "--device", "ssh-testbed",
             "--runs", "50000000", "--profiles", str(state / "profiles"), "-o", str(out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        listener = int((state / "sshd.pid").read_text())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the runner is timing on the "board"
            runners = [p for p in descendants(listener) if p != listener and _is_runner(p)]
            if runners:
                break
            time.sleep(0.2)
        time.sleep(4)  # imports done and timings flowing, even on a loaded machine
        for pid in descendants(listener):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        stdout, stderr = bench.communicate(timeout=60)
    finally:
        subprocess.run([str(ROOT / "scripts" / "ssh-testbed"), "stop"], env=env, capture_output=True)
    assert bench.returncode == 4, stderr
    assert "lost" in stderr and "incomplete" in stderr
    partial = json.loads(out.read_text())
    assert partial["complete"] is False and 0 < partial["runs"] < 50000000
    assert partial["latency_ms"]["p50"] > 0

    # the abandoned work folder is removed by the next connection, once its runner is gone
    runner_pid = runners[0]
    work = [d for d in Path("/tmp/edgeward-work").glob("run-*")
            if (d / ".pid").exists() and (d / ".pid").read_text().strip() == str(runner_pid)]
    assert len(work) == 1
    for _ in range(100):  # the runner dies at its next write to the closed connection
        if not Path(f"/proc/{runner_pid}").exists():
            break
        time.sleep(0.1)
    old = time.time() - 3600  # as if the grace period had passed
    os.utime(work[0] / ".pid", (old, old))
    result = run_cli("devices", "check", "ssh-testbed", "--profiles", PROFILES)
    assert result.exit_code == 0
    assert not work[0].exists()
