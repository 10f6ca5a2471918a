"""A LiteRT language model benched on boards and estimated for device profiles; the board's ONNX loop
feeds `logits_to_keep`.

The board runs `runner.py lm`, whose LiteRT loop is a standalone copy of `toolkit.lm.litert_decoder`
(prefill_N windows, then decode steps, the whole KV cache fed back each call): its logits must equal the
host decoder's, and on the ssh test bed (and the emulated ARM64 board, where started) its greedy tokens
for the same seeded prompt must equal the host's. The estimate reads the .tflite flatbuffer: weights as
stored, the fixed-size KV cache that every decode step reads whole. Board tests skip (with the reason)
when the test beds are not started.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.test_lm import make_lm
from tests.testbed import PROFILES, STATE, boards_started

ARM64_SITE = Path(os.environ.get("EDGEWARD_ARM64_CACHE", Path.home() / ".cache/edgeward/arm64")) / "site-packages"
FIELDS = {"prompt_tokens", "new_tokens", "runs", "warmup", "threads", "ttft_ms_p50", "ttft_ms_min",
          "decode_tokens_per_s", "decode_ms_per_token", "kv_cache_bytes", "peak_rss_mb", "tokens"}
PROMPT, NEW = 12, 10
# Tiny qwen2 (tests/test_lm.py): 2 layers x (key, value) x 2 KV heads x 8 floats a cached token; the
# LiteRT export's cache holds the model's 64 positions, all of them allocated and read every step.
KV_BYTES_PER_TOKEN = 2 * 2 * 2 * 8 * 4
CACHE_POSITIONS = 64


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict:
    """The tiny qwen2 exported to LiteRT (float) and quantized int4 blocks of 32; and to ONNX int4
    (MatMulNBits, with the optional logits_to_keep input)."""
    from toolkit.export import export
    from toolkit.quantize import quantize

    root = tmp_path_factory.mktemp("lm-litert-board")
    source = make_lm(root / "hf", "qwen2")
    litert = export(str(source), "tflite", root / "tflite").out_dir
    quantize(litert, "int4-weight", root / "int4", block_size=32)
    onnx = export(str(source), "onnx", root / "onnx").out_dir
    quantize(onnx, "int4-weight", root / "onnx-int4", block_size=32)
    return {"source": source, "fp32": litert, "int4": root / "int4", "onnx-int4": root / "onnx-int4"}


@pytest.fixture(scope="module")
def host_records(lms) -> dict:
    from toolkit.lm.bench import bench_lm

    return {kind: bench_lm(lms[kind], prompt_tokens=PROMPT, new_tokens=NEW, runs=2, warmup=1)
            for kind in ("fp32", "int4")}


@pytest.mark.slow
def test_the_runners_litert_loop_gives_the_host_decoders_logits(lms):
    """Prompt pieces of 10 (prefill_16), 40 (prefill_16 windows, the last padded: prefill_64 no longer
    fits after position 10) and single decode steps, in the board runner's copy and in the host's."""
    from toolkit.devices import runner
    from toolkit.lm.litert_decoder import LiteRtDecoder, open_interpreter

    model_path = lms["int4"] / "model.tflite"
    host = LiteRtDecoder(open_interpreter(model_path))
    model, numpy = runner.open_model(str(model_path), None)
    board = runner.LiteRtLmDecoder(model.interpreter, numpy)
    assert board.prefill_lengths == host.prefill_lengths == [16, CACHE_POSITIONS]
    assert board.context == host.context == CACHE_POSITIONS
    ids = np.random.default_rng(5).integers(0, 64, size=54)
    for start, stop in ((0, 10), (10, 50), (50, 51), (51, 52), (52, 54)):
        np.testing.assert_allclose(board.forward(ids[start:stop]), host.forward(ids[start:stop]), atol=1e-5)
    assert board.past_length == host.past_length == 54
    assert sum(value.nbytes for value in board.past.values()) == KV_BYTES_PER_TOKEN * CACHE_POSITIONS
    with pytest.raises(runner.RunnerError, match="do not fit the model's KV cache of 64 positions"):
        board.forward(ids[:11])


@pytest.mark.slow
def test_the_runners_onnx_loop_keeps_the_last_logits_only_and_decodes_alike(lms):
    """A quantized ONNX LM's logits_to_keep is fed [1]: the prefill returns one row of logits, not one a
    prompt position, and the greedy tokens equal those of the host's loop, which reads every row."""
    from toolkit.devices import runner
    from toolkit.lm.decoder import KvDecoder, open_session
    from toolkit.lm.folder import head_dim, read_config

    model_path = lms["onnx-int4"] / "model.onnx"
    size = head_dim(read_config(lms["onnx-int4"]))
    session = open_session(model_path)
    rows = []

    class Recording:  # the session, noting how many positions' logits each run returned
        def __getattr__(self, name):
            return getattr(session, name)

        def run(self, names, feeds):
            outputs = session.run(names, feeds)
            rows.append(outputs[[item.name for item in session.get_outputs()].index("logits")].shape[1])
            return outputs

    board = runner.LmDecoder(Recording(), np, size)
    assert list(board.keep) == ["logits_to_keep"] and board.keep["logits_to_keep"].tolist() == [1]
    host = KvDecoder(open_session(model_path), head_dim=size)
    prompt = np.random.default_rng(0).integers(0, 64, size=PROMPT)

    def greedy(decoder) -> list[int]:
        decoder.reset()
        tokens = [int(np.argmax(decoder.forward(prompt)))]
        while len(tokens) < NEW:
            tokens.append(int(np.argmax(decoder.forward([tokens[-1]]))))
        return tokens

    assert greedy(board) == greedy(host)
    assert rows == [1] * NEW  # the 12-token prefill included
    every = host.all_logits(prompt)
    assert every.shape == (PROMPT, 64)
    board.reset()
    np.testing.assert_allclose(board.forward(prompt), every[-1], atol=1e-4)


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.skipif(not boards_started("ssh-testbed"), reason=f"the ssh test bed is not running (scripts/ssh-testbed "
                                                     f"start; state {STATE})")
@pytest.mark.parametrize("kind", ["fp32", "int4"])
def test_litert_lm_bench_on_the_ssh_board_matches_the_host(lms, host_records, run_cli, kind):
    result = run_cli("--json", "bench", lms[kind], "--device", "ssh-testbed", "--profiles", PROFILES,
                     "--prompt-tokens", PROMPT, "--new-tokens", NEW, "--runs", 2, "--warmup", 1)
    assert result.exit_code == 0, result.stderr
    record, host = result.json(), host_records[kind]
    lm, here = record["language_model"], host["language_model"]
    assert set(lm) == set(here) == FIELDS
    assert lm["tokens"] == here["tokens"] and len(lm["tokens"]) == NEW  # greedy, same seeded prompt
    assert lm["kv_cache_bytes"] == here["kv_cache_bytes"] == KV_BYTES_PER_TOKEN * CACHE_POSITIONS
    assert lm["ttft_ms_p50"] > 0 and lm["decode_tokens_per_s"] > 0 and lm["peak_rss_mb"] > 0
    assert record["model"] == host["model"] and record["model"]["format"] == "tflite"
    assert record["device"]["name"] == "ssh-testbed" and record["mode"] == "measured" and "timing" not in record
    assert record["board"]["runtime"]["name"] == "ai_edge_litert" and record["board"]["transport"]["type"] == "ssh"


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.skipif(not boards_started("ssh-testbed"), reason=f"the ssh test bed is not running (scripts/ssh-testbed "
                                                     f"start; state {STATE})")
def test_onnx_lm_with_logits_to_keep_on_the_ssh_board_decodes_as_the_host(lms, run_cli):
    from toolkit.lm.bench import bench_lm

    host = bench_lm(lms["onnx-int4"], prompt_tokens=PROMPT, new_tokens=NEW, runs=1, warmup=0)
    result = run_cli("--json", "bench", lms["onnx-int4"], "--device", "ssh-testbed", "--profiles", PROFILES,
                     "--prompt-tokens", PROMPT, "--new-tokens", NEW, "--runs", 1, "--warmup", 0)
    assert result.exit_code == 0, result.stderr
    assert result.json()["language_model"]["tokens"] == host["language_model"]["tokens"]


@pytest.mark.slow
@pytest.mark.arm64
@pytest.mark.skipif(not boards_started("arm64-cortex-a76"), reason=f"the emulated ARM64 board is not started "
                                                          f"(scripts/arm64-testbed start; profiles in {PROFILES})")
@pytest.mark.skipif(not (ARM64_SITE / "ai_edge_litert").is_dir(),
                    reason=f"the emulated ARM64 board has no ai-edge-litert (not in {ARM64_SITE})")
def test_litert_lm_bench_on_an_emulated_arm64_board_is_marked_and_decodes_alike(lms, host_records, run_cli):
    result = run_cli("--json", "bench", lms["int4"], "--device", "arm64-cortex-a76", "--profiles", PROFILES,
                     "--prompt-tokens", PROMPT, "--new-tokens", NEW, "--runs", 1, "--warmup", 0)
    assert result.exit_code == 0, result.stderr
    record = result.json()
    assert record["language_model"]["tokens"] == host_records["int4"]["language_model"]["tokens"]
    assert record["board"]["machine"] == "aarch64" and record["board"]["runtime"]["name"] == "ai_edge_litert"
    assert record["emulated"] is True and record["timing"] == "emulated"
    human = run_cli("bench", lms["int4"], "--device", "arm64-cortex-a76", "--profiles", PROFILES,
                    "--prompt-tokens", 4, "--new-tokens", 2, "--runs", 1, "--warmup", 0)
    assert human.exit_code == 0, human.stderr
    assert "EMULATED" in human.stdout and "emulated decode" in human.stdout


@pytest.mark.slow
def test_estimate_of_a_litert_lm_for_a_device_profile(lms, run_cli):
    import transformers

    source_parameters = transformers.AutoModelForCausalLM.from_pretrained(lms["source"]).num_parameters()
    records = {}
    for kind in ("fp32", "int4"):
        result = run_cli("--json", "bench", lms[kind], "--device", "raspberry-pi-5", "--estimate",
                         "--prompt-tokens", PROMPT, "--new-tokens", NEW)
        assert result.exit_code == 0, result.stderr
        record = result.json()
        assert record["estimate"] is True and record["mode"] == "estimate" and record["model"]["format"] == "tflite"
        records[kind] = lm = record["language_model"]
        assert lm["estimate"] is True and lm["kv_bytes_per_token"] == KV_BYTES_PER_TOKEN
        assert lm["cache_positions"] == CACHE_POSITIONS and lm["kv_cache_bytes"] == KV_BYTES_PER_TOKEN * 64
        # every decode step reads the weights and the whole fixed cache, at the Pi 5's 17.1 GB/s
        step_bytes = lm["weight_bytes"] + KV_BYTES_PER_TOKEN * CACHE_POSITIONS
        assert lm["decode_bytes_per_token"] == step_bytes
        assert lm["decode_tokens_per_s"] == pytest.approx(17.1e9 / step_bytes, rel=1e-3)
        compute_ms = 2 * lm["parameters"] * PROMPT / (lm["peak_gops"] * 1e9) * 1000
        assert lm["ttft_ms"] == pytest.approx(max(compute_ms, lm["weight_bytes"] / 17.1e9 * 1000), rel=1e-3)
        assert 0 < lm["weight_bytes"] < (lms[kind] / "model.tflite").stat().st_size
    fp32, int4 = records["fp32"], records["int4"]
    # the same network: float values, block scales not counted (the extra float constants: the causal mask)
    assert fp32["parameters"] == int4["parameters"] >= source_parameters
    assert fp32["weight_bytes"] >= 4 * source_parameters and int4["weight_bytes"] < fp32["weight_bytes"] / 3
    assert fp32["compute_precision"] == "fp32" and int4["compute_precision"] == "int8"  # dynamic int4 blocks
    assert int4["decode_tokens_per_s"] > fp32["decode_tokens_per_s"]
    human = run_cli("bench", lms["int4"], "--device", "raspberry-pi-5", "--estimate")
    assert human.exit_code == 0, human.stderr
    assert "ESTIMATE" in human.stdout and "tokens/s estimated" in human.stdout
    assert "LiteRT's fixed cache of 64 positions" in human.stdout
