"""bench and estimate time the shapes that mean something: the Hugging Face config's image size
and channels, a sequence length the user sets, --shapes; never a silent 1 (issue 14, item 6)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_vit_onnx(tmp_path_factory):
    """A tiny ViT built from its config and exported through `edgeward export DIR --to onnx` (optimum):
    pixel_values comes out all symbolic."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from toolkit.export import export

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vit") / "hf"
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, num_labels=3)
    ViTForImageClassification(config).eval().save_pretrained(folder)
    return export(str(folder), "onnx", folder.parent / "onnx").model_path


@pytest.fixture(scope="module")
def tiny_distilbert_onnx(tmp_path_factory):
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from toolkit.export import export

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("distilbert") / "hf"
    config = DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=500,
                              max_position_embeddings=96, num_labels=2)
    DistilBertForSequenceClassification(config).eval().save_pretrained(folder)
    return export(str(folder), "onnx", folder.parent / "onnx").model_path


def test_vit_is_timed_at_the_configs_image_size(run_cli, tiny_vit_onnx):
    result = run_cli("--json", "bench", tiny_vit_onnx, "--runs", 3, "--warmup", 1, "--no-calibrate")
    assert result.exit_code == 0, result.stderr  # before: "Input channels C is not equal to kernel channels"
    record = result.json()
    assert record["input_shapes"] == {"pixel_values": [1, 3, 32, 32]}
    source = record["shapes"]["pixel_values"]["source"]
    assert "num_channels=3: config.json num_channels" in source and "height=32: config.json image_size" in source
    assert record["shapes"]["pixel_values"]["guessed"] is False


def test_distilbert_sequence_length_default_flag_and_shapes(run_cli, tiny_distilbert_onnx):
    default = run_cli("--json", "bench", tiny_distilbert_onnx, "--estimate")
    assert default.exit_code == 0, default.stderr
    shapes = default.json()["shapes"]
    assert shapes["input_ids"]["shape"] == [1, 96]  # the export traced the config's 96 positions
    assert shapes["input_ids"]["source"] == "the export's traced shape (manifest)"

    short = run_cli("--json", "bench", tiny_distilbert_onnx, "--estimate", "--seq-len", 8).json()
    assert short["shapes"]["attention_mask"]["shape"] == [1, 8]
    assert default.json()["flops"] > 10 * short["flops"]  # the work grows with the tokens: no silent 1

    measured = run_cli("--json", "bench", tiny_distilbert_onnx, "--runs", 3, "--warmup", 1, "--no-calibrate",
                       "--shapes", "input_ids=1x24", "--shapes", "attention_mask=1x24")
    assert measured.exit_code == 0, measured.stderr
    record = measured.json()
    assert record["input_shapes"] == {"input_ids": [1, 24], "attention_mask": [1, 24]}
    assert record["shapes"]["input_ids"]["source"] == "--shapes"


def test_bad_shapes_are_exit_2(run_cli, tiny_distilbert_onnx):
    unknown = run_cli("bench", tiny_distilbert_onnx, "--estimate", "--shapes", "pixels=1x3")
    assert unknown.exit_code == 2 and "the model does not have" in unknown.stderr
    rank = run_cli("bench", tiny_distilbert_onnx, "--estimate", "--shapes", "input_ids=1x2x3")
    assert rank.exit_code == 2 and "3 dimensions given" in rank.stderr
    syntax = run_cli("bench", tiny_distilbert_onnx, "--estimate", "--shapes", "input_ids=1xten")
    assert syntax.exit_code == 2 and "NAME=AxB" in syntax.stderr


def test_compare_warns_when_shapes_governor_or_throttling_differ(run_cli, tmp_path, tiny_distilbert_onnx):
    """Two runs are compared only as the same experiment: the shapes, the governor and the clock
    are recorded with each run, and a difference is a warning beside the ratio."""
    first = tmp_path / "first.json"
    result = run_cli("bench", tiny_distilbert_onnx, "--runs", 5, "--seq-len", 8, "--no-calibrate", "-o", first)
    assert result.exit_code == 0, result.stderr
    record = json.loads(first.read_text())
    latency = record["latency_ms"]
    assert latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert record["load_ms"] > 0 and record["first_inference_ms"] > 0 and record["peak_rss_mb"] > 10
    assert set(record["cpu"]) >= {"governor", "freq_mhz", "max_freq_mhz", "temperature_c", "throttling"}
    # This host exposes no cpufreq; the earlier run is edited as one taken on a board that did.
    record["cpu"].update(governor="powersave", throttling=True)
    first.write_text(json.dumps(record))

    second = run_cli("--json", "bench", tiny_distilbert_onnx, "--runs", 5, "--seq-len", 16, "--no-calibrate",
                     "--compare", first)
    assert second.exit_code == 0, second.stderr
    comparison = second.json()["comparison"]
    assert comparison["p50_ratio"] > 0
    warnings = " | ".join(comparison["warnings"])
    assert "the earlier run was throttling" in warnings
    assert "different input shapes" in warnings and "[1, 8]" in warnings and "[1, 16]" in warnings


def test_throttling_is_read_from_the_throttle_counter_and_the_clock():
    from toolkit.devices.runner import throttling

    assert throttling({"throttle_count": 3}, {"throttle_count": 5}) is True
    assert throttling({"throttle_count": 3}, {"throttle_count": 3}) is False
    assert throttling({}, {"governor": "performance", "freq_mhz": 1200, "max_freq_mhz": 2400}) is True
    assert throttling({}, {"governor": None}) is None
