"""Device profiles (load, validate, list/show, bad profiles) and the adb output parser.

No phone is attached here: tests/data/benchmark_model*.txt hold output in the format LiteRT's
`benchmark_model` prints (from the tool's published logs), and stand in for the device.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
EXPECTED = {
    "pixel-8", "galaxy-s24", "iphone-15-pro", "nvidia-drive-agx-orin", "qualcomm-sa8295p", "raspberry-pi-4",
    "raspberry-pi-5", "jetson-orin-nano-super", "coral-dev-board", "nxp-imx8m-plus", "rk3588-board", "esp32-s3",
    "stm32h747", "arduino-nano-33-ble-sense", "localhost",
}


def _figures(node, path=""):
    if isinstance(node, dict):
        if "value" in node:
            yield path, node
            return
        for key, child in node.items():
            yield from _figures(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _figures(child, f"{path}[{index}]")


def test_builtin_profiles_load_and_every_figure_is_sourced(tmp_path):
    from toolkit.devices import list_profiles

    profiles, problems = list_profiles(tmp_path)  # an empty --profiles folder: builtin ones only
    assert problems == []
    names = {p.name for p in profiles}
    assert EXPECTED <= names
    for profile in profiles:
        figures = list(_figures(profile.data))
        assert len(figures) >= 8, profile.name
        for path, figure in figures:
            said = [k for k in ("source", "estimate", "unknown") if isinstance(figure.get(k), str) and figure[k]]
            assert said, f"{profile.name}{path} has no source/estimate"
            if isinstance(figure["value"], int | float):
                assert figure["value"] >= 0
    pi5 = next(p for p in profiles if p.name == "raspberry-pi-5")
    assert pi5.value("memory_bandwidth_gbps") == pytest.approx(17.1)
    assert pi5.transport["type"] == "ssh"
    assert next(p for p in profiles if p.name == "pixel-8").transport["type"] == "adb"


def test_devices_list_and_show(run_cli):
    result = run_cli("--json", "devices", "list")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in result.json()["devices"]}
    assert EXPECTED <= set(rows)
    assert rows["esp32-s3"]["kind"] == "mcu"
    shown = run_cli("devices", "show", "raspberry-pi-5")
    assert shown.exit_code == 0
    assert "BCM2712" in shown.stdout and "source:" in shown.stdout and "estimate:" in shown.stdout
    data = run_cli("--json", "devices", "show", "localhost").json()
    assert data["ram_mb"]["value"] > 0 and "source" in data["ram_mb"]  # read from this host


def test_unknown_device_lists_close_matches(run_cli):
    result = run_cli("devices", "show", "raspbery-pi-5")
    assert result.exit_code == 2
    assert "raspberry-pi-5" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_profile_with_missing_or_negative_field(run_cli, tmp_path):
    base = (Path(__file__).parent.parent / "device_profiles" / "raspberry-pi-5.yaml").read_text()
    missing = "\n".join(line for line in base.splitlines() if not line.startswith("memory_bandwidth_gbps"))
    _write(tmp_path, "no-bandwidth", missing)
    negative = base.replace("idle: {value: 2.7,", "idle: {value: -2.7,")
    _write(tmp_path, "negative-power", negative)
    unsourced = base.replace('ram_mb: {value: 8192, source: "https://singleboard.org/Raspberry_Pi/pi_5_b (quotes '
                             'the Raspberry Pi launch post): 4 or 8 GB LPDDR4X-4267"}', "ram_mb: {value: 8192}")
    _write(tmp_path, "unsourced", unsourced)
    for name, words in (("no-bandwidth", "missing field 'memory_bandwidth_gbps'"),
                        ("negative-power", "'power_w.idle' is negative"),
                        ("unsourced", "'ram_mb' needs a 'source:'")):
        result = run_cli("devices", "show", name, "--profiles", tmp_path)
        assert result.exit_code == 2, result.stderr
        assert words in result.stderr and f"{name}.yaml" in result.stderr
    listed = run_cli("--json", "devices", "list", "--profiles", tmp_path)
    assert listed.exit_code == 0 and len(listed.json()["invalid"]) == 3


def test_user_profile_extends_a_builtin_one_and_host_dash_refused(run_cli, tmp_path):
    _write(tmp_path, "my-pi", "extends: raspberry-pi-5\ntransport: {type: ssh, host: pi.example, port: 2222}\n")
    data = run_cli("--json", "devices", "show", "my-pi", "--profiles", tmp_path).json()
    assert data["soc"]["value"] == "Broadcom BCM2712" and data["transport"]["port"] == 2222
    _write(tmp_path, "evil", "extends: raspberry-pi-5\ntransport: {type: ssh, host: '-oProxyCommand=touch x'}\n")
    result = run_cli("devices", "check", "evil", "--profiles", tmp_path)
    assert result.exit_code == 2 and "begins with '-'" in result.stderr


def test_ssh_host_check_refuses_options_and_metacharacters():
    from toolkit.devices.ssh import check_host
    from toolkit.errors import BadInput

    assert check_host("raspberrypi.local") == "raspberrypi.local"
    for host in ("-oProxyCommand=id", "a;b", "$(id)", "a b", ""):
        with pytest.raises(BadInput):
            check_host(host)


def test_device_without_transport_says_use_estimate(run_cli, digits_cnn_onnx):
    result = run_cli("bench", digits_cnn_onnx, "--device", "iphone-15-pro")
    assert result.exit_code == 4 and "--estimate" in result.stderr


def test_benchmark_model_parser_on_recorded_output():
    from toolkit.devices.adb import parse_benchmark_model

    cpu = parse_benchmark_model((DATA / "benchmark_model_cpu_xnnpack.txt").read_text())
    assert cpu["complete"] is True
    assert cpu["runs"] == 66 and cpu["warmup"] == 32
    assert cpu["latency_ms"]["mean"] == pytest.approx(15.1169)
    assert cpu["latency_ms"]["p50"] == pytest.approx(15.101)
    assert cpu["latency_ms"]["std"] == pytest.approx(0.112)
    assert cpu["load_ms"] == pytest.approx(28.53) and cpu["first_inference_ms"] == pytest.approx(27.812)
    assert cpu["peak_memory_mb"] == pytest.approx(52.1523)
    assert cpu["delegate"] == "XNNPACK delegate" and cpu["delegate_fallback"] is False
    assert cpu["threads"] == 4 and cpu["model_size_mb"] == pytest.approx(13.9786)

    gpu = parse_benchmark_model((DATA / "benchmark_model_gpu_fallback.txt").read_text())
    assert gpu["complete"] is True and gpu["runs"] == 102
    assert gpu["latency_ms"]["mean"] == pytest.approx(9.80635, rel=1e-4) and gpu["latency_ms"]["p50"] is None
    assert gpu["delegate"].startswith("TfLiteGpuDelegateV2 (58 of 66")
    assert gpu["delegate_fallback"] is True  # 8 ops silently ran on the CPU: say so
    assert gpu["peak_memory_mb"] == pytest.approx(88.0352)

    cut = parse_benchmark_model((DATA / "benchmark_model_interrupted.txt").read_text())
    assert cut["complete"] is False
    assert "load_ms" not in cut


def test_adb_without_adb_installed_is_a_device_fault(run_cli, digits_cnn_tflite, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = run_cli("bench", digits_cnn_tflite, "--device", "pixel-8")
    assert result.exit_code == 4 and "adb" in result.stderr


def test_profile_unknown_keys_and_every_problem_are_reported_together(tmp_path):
    from toolkit.devices.profiles import load_profile
    from toolkit.errors import BadInput

    base = (Path(__file__).parent.parent / "device_profiles" / "raspberry-pi-5.yaml").read_text()
    text = (base.replace("idle: {value: 2.7,", "idle: {value: -2.7,")
            .replace("ram_mb: {value: 8192,", "ram_mb: {value: 8192, unit: GB,")
            .replace("  user: pi\n", "  user: pi\n  port: 0\n") + "colour: red\n")
    with pytest.raises(BadInput) as caught:
        load_profile(_write(tmp_path, "many", text))
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "many.yaml" in message
    for words in ("'power_w.idle' is negative (-2.7)", "unknown field 'ram_mb.unit'", "unknown field 'colour'",
                  "'transport.port' must be a positive whole number (found 0)"):
        assert words in message, words


def test_profile_memory_and_storage_in_bytes(tmp_path):
    from toolkit.devices.profiles import check_profile, get_profile

    pi5 = get_profile("raspberry-pi-5", tmp_path)
    assert pi5.ram_bytes == 8192 * 2**20 and pi5.storage_bytes == 32 * 10**9 and not pi5.storage_is_flash
    esp32 = get_profile("esp32-s3", tmp_path)
    assert esp32.ram_bytes == 512 * 1024 and esp32.storage_bytes == 16 * 2**20 and esp32.storage_is_flash
    assert pi5.spec.memory_bandwidth_gbps.value == pytest.approx(17.1)
    assert check_profile(pi5.data) == []
    _write(tmp_path, "unknown-ram", "extends: raspberry-pi-5\nram_mb: {value: null, unknown: not published}\n")
    assert get_profile("unknown-ram", tmp_path).ram_bytes is None
