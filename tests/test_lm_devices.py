"""A language model benched on boards (the ssh test bed, an emulated ARM64 board) and estimated
for device profiles.

The board runs `runner.py lm`, the standalone copy of the host's decode loop: its greedy tokens
for the same seeded prompt must equal the host's, its record must carry the host's fields, and an
emulated board's timings are marked as emulation. The estimate's arithmetic is checked against a
hand calculation. Board tests skip (with the reason) when the test beds are not started.
"""

from __future__ import annotations

import pytest

from tests.test_lm import make_lm
from tests.testbed import PROFILES, STATE, boards_started

FIELDS = {"prompt_tokens", "new_tokens", "runs", "warmup", "threads", "ttft_ms_p50", "ttft_ms_min",
          "decode_tokens_per_s", "decode_ms_per_token", "kv_cache_bytes", "peak_rss_mb", "tokens"}
PROMPT, NEW = 12, 10
# Tiny qwen2 (tests/test_lm.py): 2 layers, 2 KV heads of 8 floats; key + value per cached token.
KV_BYTES_PER_TOKEN = 2 * 2 * 2 * 8 * 4


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict:
    """The tiny qwen2 exported to ONNX (fp32) and quantized int4 (MatMulNBits, external data)."""
    from toolkit.export import export
    from toolkit.quantize import quantize

    root = tmp_path_factory.mktemp("lm-devices")
    exported = export(str(make_lm(root / "hf", "qwen2")), "onnx", root / "onnx")
    quantize(exported.out_dir, "int4-weight", root / "int4", block_size=32)
    return {"fp32": exported.out_dir, "int4": root / "int4"}


@pytest.fixture(scope="module")
def host_records(lms) -> dict:
    from toolkit.lm.bench import bench_lm

    return {kind: bench_lm(folder, prompt_tokens=PROMPT, new_tokens=NEW, runs=2, warmup=1)
            for kind, folder in lms.items()}


def _bench_on(run_cli, folder, device: str) -> dict:
    result = run_cli("--json", "bench", folder, "--device", device, "--profiles", PROFILES,
                     "--prompt-tokens", PROMPT, "--new-tokens", NEW, "--runs", 2, "--warmup", 1)
    assert result.exit_code == 0, result.stderr
    return result.json()


def _same_measurement(board: dict, host: dict) -> None:
    lm, here = board["language_model"], host["language_model"]
    assert set(lm) == set(here) == FIELDS
    assert lm["tokens"] == here["tokens"] and len(lm["tokens"]) == NEW  # greedy, same seeded prompt
    assert lm["kv_cache_bytes"] == here["kv_cache_bytes"] == KV_BYTES_PER_TOKEN * (PROMPT + NEW - 1)
    assert lm["ttft_ms_p50"] > 0 and lm["decode_tokens_per_s"] > 0 and lm["peak_rss_mb"] > 0
    # both figures are rounded (ms/token to 3 decimals: 0.272 for 0.2724 on a fast tiny model)
    assert lm["decode_ms_per_token"] == pytest.approx(1000 / lm["decode_tokens_per_s"], rel=1e-3, abs=1e-3)
    assert board["model"] == host["model"]


@pytest.mark.ssh
@pytest.mark.skipif(not boards_started("ssh-testbed"), reason=f"the ssh test bed is not running (scripts/ssh-testbed "
                                                     f"start; state {STATE})")
@pytest.mark.parametrize("kind", ["fp32", "int4"])
def test_lm_bench_on_the_ssh_board_matches_the_host(lms, host_records, run_cli, kind):
    record = _bench_on(run_cli, lms[kind], "ssh-testbed")
    _same_measurement(record, host_records[kind])
    assert record["device"]["name"] == "ssh-testbed" and record["mode"] == "measured"
    assert record["board"]["runtime"]["name"] == "onnxruntime" and record["board"]["transport"]["type"] == "ssh"
    assert "timing" not in record


@pytest.mark.slow
@pytest.mark.arm64
@pytest.mark.skipif(not boards_started("arm64-cortex-a76"), reason=f"the emulated ARM64 board is not started "
                                                          f"(scripts/arm64-testbed start; profiles in {PROFILES})")
def test_lm_bench_on_an_emulated_arm64_board_is_marked_and_decodes_alike(lms, host_records, run_cli):
    record = _bench_on(run_cli, lms["int4"], "arm64-cortex-a76")
    _same_measurement(record, host_records["int4"])
    assert record["board"]["machine"] == "aarch64"
    assert record["emulated"] is True and record["timing"] == "emulated"
    human = run_cli("bench", lms["int4"], "--device", "arm64-cortex-a76", "--profiles", PROFILES,
                    "--prompt-tokens", 4, "--new-tokens", 2, "--runs", 1, "--warmup", 0)
    assert human.exit_code == 0, human.stderr
    assert "EMULATED" in human.stdout and "emulated decode" in human.stdout


def test_estimate_arithmetic_by_hand():
    from toolkit.lm.estimate import LmFigures, estimate_decode

    figures = LmFigures(weight_bytes=1_000_000_000, parameters=1_500_000_000, kv_bytes_per_token=100_000,
                        compute_precision="int8")
    result = estimate_decode(figures, prompt_tokens=100, new_tokens=200, bandwidth_gbps=10, peak_gops=500)
    # prefill: 2 x 1.5e9 x 100 = 3e11 FLOPs at 500e9/s = 600 ms (reading 1 GB at 10 GB/s: 100 ms)
    assert result["prefill_flops"] == 300_000_000_000
    assert result["ttft_ms"] == pytest.approx(600.0) and result["prefill_bound"] == "compute"
    # decode: 1e9 + 1e5 x (100 + 200 / 2) = 1.02e9 bytes a token at 10 GB/s = 102 ms, 9.80 tokens/s
    assert result["decode_bytes_per_token"] == 1_020_000_000
    assert result["decode_ms_per_token"] == pytest.approx(102.0)
    assert result["decode_tokens_per_s"] == pytest.approx(9.8, abs=0.01)
    assert result["kv_cache_bytes"] == 100_000 * 300
    short = estimate_decode(figures, prompt_tokens=1, new_tokens=2, bandwidth_gbps=10, peak_gops=500)
    assert short["prefill_bound"] == "memory" and short["ttft_ms"] == pytest.approx(100.0)


def test_estimate_for_a_device_profile(lms, run_cli):
    import onnx

    result = run_cli("--json", "bench", lms["int4"], "--device", "raspberry-pi-5", "--estimate",
                     "--prompt-tokens", PROMPT, "--new-tokens", NEW)
    assert result.exit_code == 0, result.stderr
    record = result.json()
    lm = record["language_model"]
    assert record["estimate"] is True and lm["estimate"] is True and record["device"]["name"] == "raspberry-pi-5"
    assert lm["kv_bytes_per_token"] == KV_BYTES_PER_TOKEN
    # every MatMul of the tiny qwen2 is int4 MatMulNBits: its K x N weights count as parameters
    graph = onnx.load(str(lms["int4"] / "model.onnx"), load_external_data=False).graph
    nbits = [node for node in graph.node if node.op_type == "MatMulNBits"]
    assert nbits and lm["parameters"] >= sum(
        {a.name: a.i for a in node.attribute}["K"] * {a.name: a.i for a in node.attribute}["N"] for node in nbits)
    assert lm["memory_bandwidth_gbps"] == 17.1 and "singleboard" in lm["memory_bandwidth_basis"]
    step_bytes = lm["weight_bytes"] + KV_BYTES_PER_TOKEN * (PROMPT + NEW / 2)
    assert lm["decode_tokens_per_s"] == pytest.approx(17.1e9 / step_bytes, rel=1e-3)
    compute_ms = 2 * lm["parameters"] * PROMPT / (lm["peak_gops"] * 1e9) * 1000
    assert lm["ttft_ms"] == pytest.approx(max(compute_ms, lm["weight_bytes"] / 17.1e9 * 1000), rel=1e-3)
    human = run_cli("bench", lms["int4"], "--device", "raspberry-pi-5", "--estimate")
    assert human.exit_code == 0, human.stderr
    assert "ESTIMATE" in human.stdout and "tokens/s estimated" in human.stdout
